//! The `/metrics` text: the recorder's series for the servers and replicas that exist now,
//! then `mcp_proxy_build_info` and the `process_*` metrics.
//!
//! # Why series are filtered here
//! The recorder (metrics-exporter-prometheus) cannot delete a series, and handles to it live
//! on in every shard's caches. A removed server's `upstream_up 0` or `child_failed 1` would
//! otherwise be exported until a restart, and the alert rules would keep firing for a server
//! that no longer exists. So the scrape keeps only series whose `server` label names a server
//! of the live registry and whose `replica` label (if any) names one of its replicas now;
//! everything else (removed servers, replicas dropped by an update) is left out. Recording
//! stays as it is (no lock, no lookup); the work is done once per scrape. A server added
//! again under the same name gets its series back (counters carry on from where they were,
//! which Prometheus reads as one series).
//!
//! # Process metrics
//! Read from `/proc/self` at scrape time (a few small reads), as the Go and Python clients do,
//! and written as text: the `metrics` facade's counters are integers, which would round
//! `process_cpu_seconds_total` to whole seconds.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// The servers a scrape exports series for: name to its replica labels (`stdio` for a
/// stdio server, each replica's URL for an HTTP one).
#[derive(Debug, Default)]
pub struct LiveSeries {
    servers: HashMap<String, Vec<String>>,
}

impl LiveSeries {
    /// The servers of `configs` (the live ones of the registry).
    pub fn of<'a>(configs: impl IntoIterator<Item = &'a crate::config::ServerConfig>) -> Self {
        use crate::config::Transport;
        let servers = configs
            .into_iter()
            .map(|s| {
                let replicas = match &s.transport {
                    Transport::Http { replicas, .. } => {
                        replicas.iter().map(|r| r.url.to_string()).collect()
                    }
                    Transport::Stdio(_) => vec!["stdio".to_owned()],
                };
                (s.name.clone(), replicas)
            })
            .collect();
        LiveSeries { servers }
    }

    /// Whether a series with these `server` and `replica` label values belongs to a server
    /// and replica that exist.
    fn keeps(&self, server: Option<&str>, replica: Option<&str>) -> bool {
        let Some(server) = server else {
            return true;
        };
        match (self.servers.get(server), replica) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(replicas), Some(r)) => replicas.iter().any(|x| x == r),
        }
    }
}

/// The whole `/metrics` text: `recorded` (the recorder's rendering) less the series of
/// servers and replicas not in `live`, then build and process metrics.
pub fn render(recorded: &str, live: &LiveSeries) -> String {
    let mut out = String::with_capacity(recorded.len() + 2048);
    filter_into(&mut out, recorded, live);
    build_info(&mut out);
    process(&mut out);
    out
}

/// Copies `recorded` to `out` without the samples `live` does not keep, and without the
/// `# HELP`/`# TYPE` lines of a family left with no sample.
fn filter_into(out: &mut String, recorded: &str, live: &LiveSeries) {
    // The exporter writes each family as its comment lines, its samples, then a blank line.
    let mut header = String::new();
    let mut family_written = false;
    for line in recorded.lines() {
        if line.is_empty() {
            if family_written {
                out.push('\n');
            }
            header.clear();
            family_written = false;
        } else if line.starts_with('#') {
            header.push_str(line);
            header.push('\n');
        } else if live.keeps(
            label(line, "server").as_deref(),
            label(line, "replica").as_deref(),
        ) {
            if !family_written {
                out.push_str(&header);
                family_written = true;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if family_written {
        out.push('\n');
    }
}

/// The (unescaped) value of label `name` in a sample line, if it has that label.
fn label(line: &str, name: &str) -> Option<String> {
    let open = line.find('{')?;
    let bytes = line.as_bytes();
    let mut i = open + 1;
    while i < bytes.len() && bytes[i] != b'}' {
        let eq = i + line[i..].find("=\"")?;
        let key = line[i..eq].trim_start_matches(',');
        let mut value = String::new();
        let mut j = eq + 2;
        loop {
            match *bytes.get(j)? {
                b'"' => break,
                b'\\' => {
                    match *bytes.get(j + 1)? {
                        b'n' => value.push('\n'),
                        c => value.push(c as char),
                    }
                    j += 2;
                }
                _ => {
                    // A whole UTF-8 character, not a byte.
                    let c = line[j..].chars().next()?;
                    value.push(c);
                    j += c.len_utf8();
                }
            }
        }
        if key == name {
            return Some(value);
        }
        i = j + 1;
        if bytes.get(i) == Some(&b',') {
            i += 1;
        }
    }
    None
}

/// `mcp_proxy_build_info{version} 1`.
fn build_info(out: &mut String) {
    out.push_str(
        "# HELP mcp_proxy_build_info The running proxy's version (the value is always 1)\n\
         # TYPE mcp_proxy_build_info gauge\n",
    );
    let _ = writeln!(
        out,
        "mcp_proxy_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
}

/// The process figures read from `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: f64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// The `process_*` families, as the Prometheus client libraries name them; nothing when
/// `/proc/self/stat` cannot be read (not Linux, no procfs).
fn process(out: &mut String) {
    let Some(p) = read_process() else {
        return;
    };
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds.to_string(),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.to_string(),
    );
    family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes.to_string(),
    );
    family(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads.to_string(),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds.to_string(),
    );
    if let Some(n) = p.open_fds {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            n.to_string(),
        );
    }
    if let Some(n) = p.max_fds {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            n.to_string(),
        );
    }
}

fn read_process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (ticks, page) = sysconf();
    let mut p = parse_stat(&stat, ticks, page)?;
    p.start_time_seconds += boot_time().unwrap_or(0.0);
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    p.max_fds = open_files_limit();
    Some(p)
}

/// Clock ticks per second and the page size, asked once.
fn sysconf() -> (f64, u64) {
    static VALUES: OnceLock<(f64, u64)> = OnceLock::new();
    *VALUES.get_or_init(|| {
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (
            if ticks > 0 { ticks as f64 } else { 100.0 },
            u64::try_from(page).unwrap_or(4096),
        )
    })
}

/// Boot time (seconds since the epoch) from `/proc/stat`, read once.
fn boot_time() -> Option<f64> {
    static BTIME: OnceLock<Option<f64>> = OnceLock::new();
    *BTIME.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The soft limit on open files.
fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// CPU time, memory, threads and start time (since boot) from `/proc/self/stat`.
fn parse_stat(stat: &str, ticks: f64, page: u64) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses: the
    // fields that follow start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time_seconds: field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: None,
        max_fds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_with_escapes() {
        let line = r#"m{server="a\"b",replica="http://h:1/mcp",x="y"} 1"#;
        assert_eq!(label(line, "server").as_deref(), Some("a\"b"));
        assert_eq!(label(line, "replica").as_deref(), Some("http://h:1/mcp"));
        assert_eq!(label(line, "x").as_deref(), Some("y"));
        assert_eq!(label(line, "shard"), None);
        assert_eq!(label("m 1", "server"), None);
        // A label whose name ends like another is not it.
        assert_eq!(label(r#"m{subserver="q"} 1"#, "server"), None);
    }

    #[test]
    fn series_of_servers_and_replicas_gone_are_left_out() {
        let recorded = "\
# HELP up_ Up.
# TYPE up_ gauge
up_{server=\"one\"} 1
up_{server=\"four\"} 0

# TYPE failed gauge
failed{server=\"five\"} 1

# TYPE picks counter
picks{server=\"one\",replica=\"http://a/mcp\"} 3
picks{server=\"one\",replica=\"http://gone/mcp\"} 2

# TYPE conns gauge
conns{shard=\"0\"} 2

";
        let mut live = LiveSeries::default();
        live.servers
            .insert("one".into(), vec!["http://a/mcp".into()]);
        let mut out = String::new();
        filter_into(&mut out, recorded, &live);
        assert_eq!(
            out,
            "\
# HELP up_ Up.
# TYPE up_ gauge
up_{server=\"one\"} 1

# TYPE picks counter
picks{server=\"one\",replica=\"http://a/mcp\"} 3

# TYPE conns gauge
conns{shard=\"0\"} 2

"
        );
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 7 0 \
                    500 123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let p = parse_stat(stat, 100.0, 4096).expect("parsed");
        assert_eq!(p.cpu_seconds, 2.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.start_time_seconds, 5.0);
        assert_eq!(p.virtual_bytes, 123_456_789);
        assert_eq!(p.resident_bytes, 300 * 4096);
    }

    #[test]
    fn this_process_reads_sane_figures() {
        let p = read_process().expect("/proc/self/stat");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.threads >= 1);
        assert!(p.open_fds.is_some_and(|n| n >= 3));
        assert!(p.start_time_seconds > 1.5e9, "{p:?}");
    }
}
