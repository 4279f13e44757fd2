//! Who may receive an event: one rule, used by live fan-out, replay,
//! catch-up and `/poll` alike.
//!
//! A native subscriber receives an event when one of its topic selectors
//! matches the event's topic, the event is not private, and it is addressed
//! to nobody or to the subscriber's user. A protocol may bring its own rule
//! ([`Admission`], e.g. Mercure's: any of an update's topics, private
//! updates for authorized subscribers); this module does not know which.

use crate::event::Event;
use crate::log::View;
use crate::topic::{any_matches, Selector};
use std::sync::Arc;

/// What the rule looks at in an event, whether live or stored.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Its (first) topic.
    pub topic: &'a str,
    /// Further topics (Mercure updates may have several).
    pub also: Vec<&'a str>,
    /// The user it is addressed to.
    pub to: Option<&'a str>,
    /// Whether it is private (only subscribers authorized for it).
    pub private: bool,
}

impl<'a> Facts<'a> {
    /// The facts of a live event.
    pub fn of_event(e: &'a Event) -> Facts<'a> {
        let (also, private) = match &e.extra {
            Some(x) => (x.also.iter().map(|t| &**t).collect(), x.private),
            None => (Vec::new(), false),
        };
        Facts {
            topic: &e.topic,
            also,
            to: e.to.as_deref(),
            private,
        }
    }

    /// The facts of a stored event.
    pub fn of_view(v: &View<'a>) -> Facts<'a> {
        Facts {
            topic: v.topic,
            also: v.also().collect(),
            to: v.to,
            private: v.private,
        }
    }

    /// Its topic and further topics.
    pub fn topics(&self) -> impl Iterator<Item = &'a str> + Clone + '_ {
        std::iter::once(self.topic).chain(self.also.iter().copied())
    }
}

/// Where the hub files a subscriber with its own rule, so that fan-out
/// finds it without looking at every such subscriber per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Index {
    /// Offer it the events any of whose topics is one of these.
    Topics(Vec<Arc<str>>),
    /// Offer it every event (a selector that is a pattern or a template).
    Everything,
}

/// A protocol's own admission rule (Mercure's). Implementations are shared
/// by reference; [`Admission::as_any`] lets the protocol find its own type
/// again.
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// Whether a subscriber of `user` with this admission receives `e`.
    fn admits(&self, e: &Facts<'_>, user: Option<&str>) -> bool;
    /// Where the hub should file it.
    fn index(&self) -> Index;
    /// The concrete type, for the protocol that made it.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What one subscriber may receive: its selectors and user, or a protocol's
/// own rule.
#[derive(Clone)]
pub struct Audience<'s> {
    /// Topic selectors of a native subscriber.
    pub selectors: &'s [Selector],
    /// The subscriber's user.
    pub user: Option<&'s str>,
    /// A protocol's own rule, instead of `selectors`.
    pub admission: Option<&'s Arc<dyn Admission>>,
}

impl Audience<'_> {
    /// The rule, whole.
    pub fn admits(&self, e: &Facts<'_>) -> bool {
        match self.admission {
            Some(a) => a.admits(e, self.user),
            None => any_matches(self.selectors, e.topic) && self.admits_matched(e),
        }
    }

    /// The rule for an event whose topic the subscriber's selectors are
    /// already known to match (the hub found it through its index).
    pub fn admits_matched(&self, e: &Facts<'_>) -> bool {
        match self.admission {
            Some(a) => a.admits(e, self.user),
            None => !e.private && e.to.is_none_or(|to| self.user == Some(to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(topic: &'a str, to: Option<&'a str>, private: bool) -> Facts<'a> {
        Facts {
            topic,
            also: Vec::new(),
            to,
            private,
        }
    }

    #[test]
    fn native_rule() {
        let sels = [Selector::parse("orders/*").unwrap()];
        let bob = Audience {
            selectors: &sels,
            user: Some("bob"),
            admission: None,
        };
        let anon = Audience {
            user: None,
            ..bob.clone()
        };
        assert!(bob.admits(&facts("orders/1", None, false)));
        assert!(!bob.admits(&facts("orders/1/2", None, false)));
        assert!(bob.admits(&facts("orders/1", Some("bob"), false)));
        assert!(!anon.admits(&facts("orders/1", Some("bob"), false)));
        assert!(
            !bob.admits(&facts("orders/1", None, true)),
            "private is Mercure's"
        );
        assert!(bob.admits_matched(&facts("anything", None, false)));
    }
}
