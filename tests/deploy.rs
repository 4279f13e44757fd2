//! The deployment files in examples/deploy: the container config passes
//! `spout check` and a server running it answers the probes; the nginx
//! snippet passes `nginx -t`; the Kubernetes manifests, the Dockerfile and
//! the systemd unit agree with the config (port, data path, probes, shutdown
//! grace) and carry the settings SSE needs.
//!
//! The manifests are read by indentation, not by a YAML library: enough for
//! the block-style files in examples/deploy/k8s, and no new dependency.

use spout::config::Config;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config() -> Config {
    Config::load(&deploy_dir().join("config.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn spout() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spout"))
}

/// `nginx` and `openssl` must be present in CI (CI=true); elsewhere a
/// missing tool skips the test with a note.
fn tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(candidates.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "`{name}` is not installed; CI must install it (Debian: apt-get install {name})"
            );
        }
        eprintln!("note: `{name}` is not installed; skipping this test (apt-get install {name})");
    }
    found
}

// ---------------------------------------------------------------------------
// A minimal reader for block-style YAML.

/// One YAML document (or a part of one), as lines.
#[derive(Clone, Debug)]
struct Doc {
    lines: Vec<String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The line without a trailing `# comment` (a `#` outside quotes, after a
/// space or at the start).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev == ' ' || prev == '\t' => return line[..i].trim_end(),
            _ => {}
        }
        prev = c;
    }
    line.trim_end()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// `[a, "b"]` → `["a", "b"]`.
fn flow_list(v: &str) -> Vec<String> {
    let v = v.trim();
    assert!(
        v.starts_with('[') && v.ends_with(']'),
        "not a flow list: {v}"
    );
    v[1..v.len() - 1]
        .split(',')
        .map(unquote)
        .filter(|s| !s.is_empty())
        .collect()
}

fn documents(text: &str) -> Vec<Doc> {
    let mut docs = vec![Doc { lines: vec![] }];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(Doc { lines: vec![] });
        } else {
            docs.last_mut().unwrap().lines.push(line.to_string());
        }
    }
    docs.retain(|d| d.lines.iter().any(|l| !strip_comment(l).trim().is_empty()));
    docs
}

impl Doc {
    /// `key: value` on this line (also as a list item `- key: value`).
    fn entry<'a>(line: &'a str, key: &str) -> Option<&'a str> {
        let content = strip_comment(line).trim_start();
        let content = content.strip_prefix("- ").unwrap_or(content).trim_start();
        let rest = content.strip_prefix(key)?.strip_prefix(':')?;
        (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim())
    }

    /// Every value of `key` at any depth, unquoted.
    fn values(&self, key: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| Self::entry(l, key))
            .map(unquote)
            .collect()
    }

    /// The one value of `key` in this part.
    fn value(&self, key: &str) -> String {
        let v = self.values(key);
        assert_eq!(v.len(), 1, "expected one `{key}:` in\n{}", self.text());
        v.into_iter().next().unwrap()
    }

    /// The value of `key` at the top level (no indentation).
    fn top(&self, key: &str) -> String {
        self.lines
            .iter()
            .filter(|l| indent(l) == 0)
            .find_map(|l| Self::entry(l, key))
            .map(unquote)
            .unwrap_or_else(|| panic!("no top-level `{key}:` in\n{}", self.text()))
    }

    /// What is nested under the first `key:` line: the lines after it that
    /// are indented deeper (blank and comment lines included).
    fn section(&self, key: &str) -> Doc {
        let start = self
            .lines
            .iter()
            .position(|l| Self::entry(l, key).is_some())
            .unwrap_or_else(|| panic!("no `{key}:` in\n{}", self.text()));
        // A list item's keys sit two columns right of its dash.
        let head = &self.lines[start];
        let trimmed = head.trim_start();
        let depth = indent(head) + if trimmed.starts_with("- ") { 2 } else { 0 };
        let lines = self.lines[start + 1..]
            .iter()
            .take_while(|l| strip_comment(l).trim().is_empty() || indent(l) > depth)
            .cloned()
            .collect();
        Doc { lines }
    }

    /// A literal block scalar (`key: |`), de-indented, as the file it holds.
    fn block_scalar(&self, key: &str) -> String {
        let start = self
            .lines
            .iter()
            .position(|l| Self::entry(l, key) == Some("|"))
            .unwrap_or_else(|| panic!("no `{key}: |` in\n{}", self.text()));
        let depth = indent(&self.lines[start]);
        let body: Vec<&String> = self.lines[start + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > depth)
            .collect();
        let cut = body
            .iter()
            .find(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .unwrap_or(0);
        let mut text: String = body
            .iter()
            .map(|l| format!("{}\n", l.get(cut..).unwrap_or("")))
            .collect();
        // `|` keeps exactly one final line break.
        while text.ends_with("\n\n") {
            text.pop();
        }
        text
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The documents of examples/deploy/k8s/*.yaml, by kind.
fn manifest(kind: &str) -> Doc {
    let dir = deploy_dir().join("k8s");
    let mut found = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.extend(
                documents(&text)
                    .into_iter()
                    .filter(|d| d.top("kind") == kind),
            );
        }
    }
    assert_eq!(found.len(), 1, "expected one {kind} in {}", dir.display());
    found.pop().unwrap()
}

fn secs(d: &str) -> Duration {
    humantime::parse_duration(d).unwrap_or_else(|e| panic!("`{d}`: {e}"))
}

// ---------------------------------------------------------------------------
// The config.

#[test]
fn the_deploy_config_passes_spout_check() {
    let cache = tempfile::tempdir().unwrap();
    let file = deploy_dir().join("config.toml");
    let out = spout()
        .arg("check")
        .arg(&file)
        .env("SPOUT_PLUGIN_CACHE", cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "spout check {}: {}{stdout}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listen 0.0.0.0:8080"), "{stdout}");
    assert!(stdout.contains("log /var/lib/spout"), "{stdout}");

    let config = config();
    let r = &config.log.retention;
    assert!(
        r.max_age.is_some() && r.max_events.is_some() && r.max_bytes.is_some(),
        "retention bounded by age, count and size: {r:?}"
    );
    assert!(!config.server.insecure_user_param);
}

/// `spout serve` on the deploy config (on a free port and a temporary data
/// dir) answers every path the probes and HEALTHCHECK ask for with 200, and
/// stops cleanly on SIGTERM within its shutdown grace.
#[test]
fn a_server_on_the_deploy_config_answers_the_probes() {
    let deployment = manifest("Deployment");
    let mut paths = deployment.values("path");
    paths.push("/healthz".into());
    paths.push("/readyz".into());
    paths.sort();
    paths.dedup();

    let dir = tempfile::tempdir().unwrap();
    let child = spout()
        .arg("serve")
        .arg("--config")
        .arg(deploy_dir().join("config.toml"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("SPOUT_PLUGIN_CACHE", dir.path().join("plugin-cache"))
        .env("SPOUT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Guard(Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let _ = tx.send(line[i + "listening on http://".len()..].trim().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no `listening on` line");

    for path in &paths {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: spout\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "GET {path}: {response}"
        );
    }

    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.0.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + config().server.shutdown_grace + Duration::from_secs(5);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "exit after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// nginx.

/// A free TCP port on 127.0.0.1 (and, when `v6`, also free on [::1]).
fn free_port(v6: bool) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if !v6 || TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

/// The snippet, made testable: certificate placeholders point at a fresh
/// self-signed pair, and every `listen` moves to a free loopback port
/// (`nginx -t` binds its listen sockets, and ports 80/443 may be taken or,
/// without root, not allowed). IPv6 listens are dropped where the machine
/// has no IPv6 loopback.
fn testable_snippet(snippet: &str, cert: &Path, key: &str) -> String {
    let has_v6 = TcpListener::bind("[::1]:0").is_ok();
    let mut ports = std::collections::BTreeMap::new();
    let mut out = String::new();
    for line in snippet.lines() {
        let code = strip_comment(line);
        let Some(rest) = code.trim_start().strip_prefix("listen ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let (addr, flags) = rest.split_once(' ').unwrap_or((rest, ""));
        let v6 = addr.starts_with('[');
        if v6 && !has_v6 {
            continue;
        }
        let port = addr.rsplit(':').next().unwrap().to_string();
        let taken: Vec<u16> = ports.values().copied().collect();
        let free = *ports.entry(port).or_insert_with(|| loop {
            let p = free_port(has_v6);
            if !taken.contains(&p) {
                break p;
            }
        });
        let host = if v6 { "[::1]" } else { "127.0.0.1" };
        out.push_str(&format!(
            "{}listen {host}:{free} {flags};\n",
            &line[..indent(line)]
        ));
    }
    let placeholder_cert = "/etc/ssl/spout/fullchain.pem";
    let placeholder_key = "/etc/ssl/spout/privkey.pem";
    assert!(out.contains(placeholder_cert) && out.contains(placeholder_key));
    out.replace(placeholder_cert, &cert.display().to_string())
        .replace(placeholder_key, key)
}

/// Runs `nginx -t` on a wrapper config that includes `snippet` inside
/// `http {}`, with every path nginx writes inside `dir`.
fn nginx_t(nginx: &Path, dir: &Path, snippet: &str) -> std::process::Output {
    std::fs::write(dir.join("spout.conf"), snippet).unwrap();
    let d = dir.display();
    let wrapper = format!(
        "pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{}}\n\
         http {{\n\
         \x20   access_log {d}/access.log;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   include {d}/spout.conf;\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), wrapper).unwrap();
    Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .output()
        .unwrap()
}

#[test]
fn the_nginx_snippet_has_the_sse_settings() {
    let snippet = read("nginx.conf");
    let code: String = snippet
        .lines()
        .map(|l| format!("{}\n", strip_comment(l).trim()))
        .collect();
    for directive in [
        "server 127.0.0.1:8080;",
        "proxy_pass http://spout;",
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_buffering off;",
        "proxy_cache off;",
        "proxy_read_timeout 1h;",
        "location / {",
    ] {
        assert!(
            code.lines().any(|l| l == directive),
            "nginx.conf lacks `{directive}`"
        );
    }
    // The proxy's body limit admits what Spout admits.
    let body = config().server.limits.max_body_bytes.as_u64();
    assert!(
        code.contains(&format!("client_max_body_size {}m;", body >> 20)),
        "client_max_body_size should match max_body_bytes ({body} bytes)"
    );
}

#[test]
fn the_nginx_snippet_passes_nginx_t() {
    let Some(nginx) = tool(
        "nginx",
        &[
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ],
    ) else {
        return;
    };
    let Some(openssl) = tool("openssl", &["/usr/local/bin/openssl"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new(openssl)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=spout.example.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let snippet = testable_snippet(&read("nginx.conf"), &cert, &key.display().to_string());
    let out = nginx_t(&nginx, dir.path(), &snippet);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("test is successful"),
        "nginx -t failed:\n{stderr}\n--- the tested snippet:\n{snippet}"
    );

    // The harness itself catches a broken config.
    let broken = snippet.replacen("proxy_buffering off;", "proxy_buffering sideways;", 1);
    let out = nginx_t(&nginx, dir.path(), &broken);
    assert!(
        !out.status.success(),
        "nginx -t accepted a broken config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Kubernetes.

#[test]
fn the_k8s_manifests_agree_on_port_probes_and_config() {
    let config = config();
    let port = config.server.listen.port();
    assert_eq!(port, 8080);

    // ConfigMap: carries examples/deploy/config.toml verbatim.
    let cm = manifest("ConfigMap");
    let cm_name = cm.section("metadata").value("name");
    assert_eq!(
        cm.section("data").block_scalar("config.toml"),
        read("config.toml"),
        "k8s/configmap.yaml must embed examples/deploy/config.toml unchanged"
    );

    // Deployment.
    let dep = manifest("Deployment");
    let dep_name = dep.section("metadata").value("name");
    let pod = dep.section("template");
    let pod_label = pod.section("labels").value("app.kubernetes.io/name");
    let container = pod.section("containers");
    let ports = container.section("ports");
    assert_eq!(ports.value("containerPort"), port.to_string());
    let port_name = ports.value("name");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let p = container.section(probe).section("httpGet");
        assert_eq!(p.value("path"), path, "{probe}");
        let probe_port = p.value("port");
        assert!(
            probe_port == port_name || probe_port == port.to_string(),
            "{probe} port `{probe_port}` is neither `{port_name}` nor {port}"
        );
    }
    let grace: u64 = pod.value("terminationGracePeriodSeconds").parse().unwrap();
    assert!(
        Duration::from_secs(grace) > config.server.shutdown_grace,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace {:?}",
        config.server.shutdown_grace
    );
    // The config from the ConfigMap, at the path the command reads.
    let command = flow_list(&container.value("command"));
    assert_eq!(
        command,
        ["spout", "serve", "--config", "/etc/spout/config.toml"]
    );
    let volumes = pod.section("volumes");
    assert_eq!(volumes.section("configMap").value("name"), cm_name);
    let mounts = container.section("volumeMounts");
    let mount_paths = mounts.values("mountPath");
    assert!(
        mount_paths.iter().any(|p| p == "/etc/spout"),
        "{mount_paths:?}"
    );
    assert!(
        mount_paths.iter().any(|p| Path::new(p) == config.log.path),
        "the log path {} is mounted ({mount_paths:?})",
        config.log.path.display()
    );
    // Non-root with a read-only root file system.
    assert_eq!(
        container
            .section("securityContext")
            .value("readOnlyRootFilesystem"),
        "true"
    );
    assert_eq!(pod.value("runAsNonRoot"), "true");
    // The embedded log is per pod: one replica unless the config is clustered.
    if config.cluster.is_none() {
        assert_eq!(dep.value("replicas"), "1");
    }

    // Service → the pods' port.
    let svc = manifest("Service");
    let svc_name = svc.section("metadata").value("name");
    assert_eq!(
        svc.section("selector").value("app.kubernetes.io/name"),
        pod_label
    );
    let svc_ports = svc.section("ports");
    let target = svc_ports.value("targetPort");
    assert!(
        target == port_name || target == port.to_string(),
        "Service targetPort `{target}`"
    );
    let svc_port = svc_ports.value("port");

    // Ingress → the Service, with the SSE annotations.
    let ing = manifest("Ingress");
    let annotations = ing.section("annotations");
    for (key, want) in [
        ("proxy-buffering", "off"),
        ("proxy-read-timeout", "3600"),
        ("proxy-send-timeout", "3600"),
        ("proxy-http-version", "1.1"),
    ] {
        assert_eq!(
            annotations.value(&format!("nginx.ingress.kubernetes.io/{key}")),
            want,
            "Ingress annotation {key}"
        );
    }
    let backend = ing.section("backend").section("service");
    assert_eq!(backend.value("name"), svc_name);
    assert_eq!(backend.section("port").value("number"), svc_port);

    // HPA → the Deployment, on CPU, with the cluster-mode warning.
    let hpa_text = read("k8s/hpa.yaml");
    let hpa = manifest("HorizontalPodAutoscaler");
    assert_eq!(hpa.top("apiVersion"), "autoscaling/v2");
    let target = hpa.section("scaleTargetRef");
    assert_eq!(target.value("kind"), "Deployment");
    assert_eq!(target.value("name"), dep_name);
    assert_eq!(hpa.section("resource").value("name"), "cpu");
    assert!(
        hpa_text.contains("[cluster]") && hpa_text.contains("examples/cluster/README.md"),
        "hpa.yaml must say that more than one replica needs cluster mode"
    );
}

// ---------------------------------------------------------------------------
// systemd and Docker.

/// `Key=value` settings of a unit file, comments skipped.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn the_systemd_unit_serves_the_config_without_memory_deny_write_execute() {
    let text = read("spout.service");
    let settings = unit_settings(&text);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };

    let exec = get("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    assert!(
        exec[0].contains(" serve --config "),
        "ExecStart={}",
        exec[0]
    );
    assert!(exec[0].starts_with('/'), "ExecStart needs an absolute path");

    assert!(
        get("MemoryDenyWriteExecute").is_empty(),
        "MemoryDenyWriteExecute breaks wasmtime's JIT; it must not be set"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with('#') && l.contains("MemoryDenyWriteExecute")),
        "a comment says why MemoryDenyWriteExecute is not set"
    );

    for (key, want) in [
        ("StateDirectory", "spout"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("LimitNOFILE", "1048576"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(get(key), [want], "{key}=");
    }
    // Its StateDirectory is where the config keeps the log.
    assert_eq!(config().log.path, Path::new("/var/lib/spout"));

    let stop = get("TimeoutStopSec");
    assert_eq!(stop.len(), 1);
    assert!(
        secs(stop[0]) > config().server.shutdown_grace,
        "TimeoutStopSec={} must exceed shutdown_grace",
        stop[0]
    );
}

#[test]
fn the_dockerfile_matches_the_config_and_the_toolchain() {
    // Continuation lines joined, comments dropped.
    let text = read("Dockerfile").replace("\\\n", " ");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let has = |want: &str| lines.contains(&want);
    let config = config();

    let toolchain = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rust-toolchain.toml"
    ))
    .unwrap();
    let channel = Doc {
        lines: toolchain.lines().map(|l| l.replace(" =", ":")).collect(),
    }
    .value("channel");
    let minor = channel
        .rsplit_once('.')
        .map_or(channel.as_str(), |(m, _)| m);
    assert!(
        lines[0].starts_with(&format!("FROM rust:{minor}-")),
        "the builder is the pinned Rust {channel}: {}",
        lines[0]
    );
    assert!(text.contains("rustup target add wasm32-wasip2"));
    assert!(text.contains("cargo build --release --locked -p spout"));
    assert!(has(&format!("EXPOSE {}", config.server.listen.port())));
    assert!(has(&format!("VOLUME {}", config.log.path.display())));
    assert!(has(
        "COPY examples/deploy/config.toml /etc/spout/config.toml"
    ));
    assert!(has("STOPSIGNAL SIGTERM"));
    assert!(has(
        r#"ENTRYPOINT ["spout", "serve", "--config", "/etc/spout/config.toml"]"#
    ));
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !matches!(user.split(':').next(), Some("0" | "root")),
        "USER {user}"
    );
    if let Some(check) = lines.iter().find(|l| l.starts_with("HEALTHCHECK")) {
        assert!(
            check.contains(&format!(":{}/healthz", config.server.listen.port())),
            "{check}"
        );
    }
    let ignore = read("Dockerfile.dockerignore");
    for pattern in ["target/", "data/"] {
        assert!(ignore.lines().any(|l| l.trim() == pattern), "{pattern}");
    }
}

/// `spout --config FILE` (no subcommand) serves like `spout serve --config
/// FILE`, as `cargo run --release -- --config …` in the examples suggests;
/// a subcommand's flags still belong to it.
#[test]
fn spout_without_a_subcommand_serves_with_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[log]\nfsync = \"batch\"\n").unwrap();
    let mut child = std::process::Command::new(crate::support::bin())
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("SPOUT_PLUGIN_CACHE", crate::support::plugin_cache())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("listening on http://") || l.contains("error"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap_or_default();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
    // `check` keeps its own arguments.
    let out = std::process::Command::new(crate::support::bin())
        .args(["check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
