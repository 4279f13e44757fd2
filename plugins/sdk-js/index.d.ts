// Types of @spout/sdk (index.js). The raw ABI types come from types/wit/,
// generated from ../wit/spout.wit (`npm run gen-types`).
/// <reference path="./types/wit/filter.d.ts" />
/// <reference path="./types/wit/transform.d.ts" />
/// <reference path="./types/wit/auth.d.ts" />

import type * as wit from 'spout:plugin/types@0.1.0';
import type * as filterWorld from 'spout:plugin/filter@0.1.0';
import type * as transformWorld from 'spout:plugin/transform@0.1.0';
import type * as authWorld from 'spout:plugin/auth@0.1.0';
import type * as lifecycleIface from 'spout:plugin/lifecycle@0.1.0';

export type { wit };

/** A JSON value (what a plugin's config table becomes). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The `lifecycle` interface every plugin exports. */
export type Lifecycle = typeof lifecycleIface;

/** What every helper's spec has. `this` in the spec's functions is the spec. */
export interface PluginSpec<Config extends object = Record<string, any>> {
  /** Name shown by `describe`. */
  name: string;
  /** Version shown by `describe` (default `0.1.0`). */
  version?: string;
  /** JSON Schema of the config `describe` reports (default: any object). The host does not validate against it: check in `init`. */
  configSchema?: object;
  /**
   * Called once per instance with the plugin's `config` table (parsed; `{}`
   * when there is none). Throw a string (or Error) to refuse the config.
   */
  init?(config: Config): void;
  /** The parsed config, set before `init` is called. */
  config?: Config;
}

/** One event of a batch: a lazy view into the batch buffer. */
export declare class Event {
  /** Position in the batch. */
  readonly index: number;
  /** Log id (0 for events not yet stored); exact below 2^53. */
  readonly id: number;
  /** Milliseconds since the Unix epoch when the log accepted it (0 before). */
  readonly timeMs: number;
  /** The topic (decoded on first access). */
  topic: string;
  /** The SSE `event:` type; `message` when the publisher gave none. */
  type: string;
  /**
   * The data as text ('' if not UTF-8), decoded on first access. Assigning
   * (transforms) takes a string, bytes, or any value stored as its JSON;
   * reading then returns what was assigned.
   */
  get data(): string;
  set data(value: string | Uint8Array | Json | object);
  /** The data bytes without decoding (a view into the batch buffer). */
  readonly bytes: Uint8Array;
  /** The user a private event is addressed to, if any. */
  target: string | undefined;
  /** `data` parsed as JSON (cached; throws if it is not JSON). */
  json<T = any>(): T;
  toJSON(): { id: number; timeMs: number; topic: string; type: string; data: string; target?: string };
}

/** A new event a transform returns (ids and times are assigned by the log). */
export interface NewEvent {
  topic: string;
  /** SSE `event:` type (default `message`). */
  type?: string;
  /** A string, bytes, or any value (stored as its JSON). */
  data?: string | Uint8Array | Json | object;
  /** Deliver only to this user. */
  target?: string;
}

/** The subscription a filter call is for: the same object for every event of one call. */
export declare class Subscription {
  readonly user: string;
  readonly topics: string[];
  /** Query parameters of the subscribe request, as [name, value] pairs. */
  readonly params: Array<[string, string]>;
  /** The first value of query parameter `name`, if any. */
  param(name: string): string | undefined;
  /** The principal's claims (a JSON object), parsed on first access. */
  readonly claims: Record<string, Json>;
  /** Per-call memo: add your own fields (e.g. a needle built from `user`). */
  [memo: string]: unknown;
}

/** An HTTP request as an auth plugin sees it. */
export declare class Request {
  readonly method: string;
  readonly path: string;
  /** Query parameters as [name, value] pairs. */
  readonly query: Array<[string, string]>;
  /** Headers as [lower-case name, value] pairs. */
  readonly headers: Array<[string, string]>;
  readonly remoteAddr: string;
  /** The first value of header `name` (any case), if any. */
  header(name: string): string | undefined;
  /** The first value of query parameter `name`, if any. */
  param(name: string): string | undefined;
}

/** What `authenticate` returns. */
export interface PrincipalInit {
  /** User id; private events (`to`) are delivered to it. */
  user: string;
  /** Topic selectors it may subscribe or publish to (`**`: all). Default none. */
  topics?: string[];
  /** Further claims (an object, or its JSON text), passed on to filters. */
  claims?: Record<string, Json> | string;
}

/** A refusal: HTTP status and reason. Throw one: `throw deny(403, 'no')`. */
export declare class Denial implements wit.Denial {
  constructor(status: number, reason: string);
  status: number;
  reason: string;
}
export declare function deny(status: number, reason: string): Denial;

export interface FilterSpec<Config extends object = Record<string, any>> extends PluginSpec<Config> {
  /** Whether subscribers with this subscription key see `event` (the hot path). */
  keep(sub: Subscription, event: Event): boolean;
}
export interface TransformSpec<Config extends object = Record<string, any>> extends PluginSpec<Config> {
  /**
   * The events to store instead of `events` (the same `Event`s, changed or
   * not, or new ones), or throw a `Denial` to refuse the whole publish.
   */
  apply(events: Event[]): Array<Event | NewEvent>;
}
export interface AuthSpec<Config extends object = Record<string, any>> extends PluginSpec<Config> {
  /** The principal for a request, or throw a `Denial` (401, 403, ...). */
  authenticate(req: Request): PrincipalInit;
  /** Called when a subscriber authenticated by this plugin leaves. */
  onDisconnect?(conn: wit.Connection): void;
}

/** The exports of the `filter` world. */
export interface FilterExports {
  lifecycle: Lifecycle;
  keep: typeof filterWorld.keep;
}
/** The exports of the `transform` world. */
export interface TransformExports {
  lifecycle: Lifecycle;
  apply: typeof transformWorld.apply;
}
/** The exports of the `auth` world. */
export interface AuthExports {
  lifecycle: Lifecycle;
  authenticate: typeof authWorld.authenticate;
  onDisconnect: typeof authWorld.onDisconnect;
}

export declare function filter<C extends object = Record<string, any>>(spec: FilterSpec<C> & ThisType<FilterSpec<C> & Record<string, any>>): FilterExports;
export declare function transform<C extends object = Record<string, any>>(spec: TransformSpec<C> & ThisType<TransformSpec<C> & Record<string, any>>): TransformExports;
export declare function auth<C extends object = Record<string, any>>(spec: AuthSpec<C> & ThisType<AuthSpec<C> & Record<string, any>>): AuthExports;

/** The events of a raw batch as `Event` views. */
export declare function events(batch: wit.EventBatch): Event[];
/** A raw batch (one buffer plus spans) from events. */
export declare function toBatch(events: Array<Event | NewEvent>): wit.EventBatch;
/** Parses the config JSON the host passes to `init` (`""` and `null` mean `{}`); throws a string. */
export declare function parseConfig(json: string): Json;

/** Host logging: lines end up in Spout's log, tagged with the plugin name. */
export declare const log: {
  trace(msg: unknown): void;
  debug(msg: unknown): void;
  info(msg: unknown): void;
  warn(msg: unknown): void;
  error(msg: unknown): void;
};
/** Host clocks. */
export declare const clock: {
  /** Wall-clock milliseconds since the Unix epoch. */
  wallMs(): number;
  /** Monotonic nanoseconds since an arbitrary start. */
  monotonicNs(): bigint;
};
/** The plugin's own key-value store (persisted by the host). */
export declare const kv: {
  get(key: string): Uint8Array | undefined;
  getText(key: string): string | undefined;
  /** Throws the host's error text. */
  set(key: string, value: Uint8Array | string): void;
  /** Throws the host's error text. */
  delete(key: string): void;
};
