//! The standard `process_*` metrics of Prometheus client libraries, read from `/proc/self`
//! at scrape time (Linux; elsewhere, or when a file cannot be read, the family is left out).
//!
//! A small reader of its own rather than the `prometheus` crate's `process` feature: that
//! pulls `procfs` and a second major version of `rustix` with `linux-raw-sys` (about 400k
//! lines of Rust) for five numbers, and reports CPU time in whole seconds only.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// Clock ticks per second of `/proc/<pid>/stat`: `USER_HZ`, part of the kernel's user-space
/// ABI, 100 on every architecture Linux containers run on (Prometheus's Go `procfs` assumes
/// the same).
const USER_HZ: f64 = 100.0;

/// One reading of the process; `None` for what could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub threads: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

impl Sample {
    /// Reads `/proc/self` now.
    pub fn read() -> Self {
        let text = |path: &str| std::fs::read_to_string(path).ok();
        let stat = text("/proc/self/stat").and_then(|s| parse_stat(&s));
        let boot_time = text("/proc/stat").and_then(|s| parse_boot_time(&s));
        Self {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            resident_bytes: text("/proc/self/status").and_then(|s| parse_rss_bytes(&s)),
            virtual_bytes: stat.map(|s| s.vsize as f64),
            threads: stat.map(|s| s.threads as f64),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / USER_HZ),
            // Counted the way Prometheus's Go client counts them: the directory's own
            // descriptor, open while it is listed, is one of the entries.
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as f64),
            max_fds: text("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
        }
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
}

/// `/proc/<pid>/stat`: the command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, after_comm) = text.rsplit_once(')')?;
    // Field 3 (state) is index 0 here: field n is index n - 3.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// `btime` of `/proc/stat`: the boot time, in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, which the kernel writes in kB (KiB).
fn parse_rss_bytes(text: &str) -> Option<f64> {
    let value = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some((kib * 1024) as f64)
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits` (what `open` runs into);
/// `None` when unlimited.
fn parse_max_open_files(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse::<u64>().ok().map(|v| v as f64)
}

/// The families, in the Prometheus client guidelines' names.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: fn(&Sample) -> Option<f64>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "process_cpu_seconds_total",
        help: "Total user and system CPU time spent in seconds.",
        kind: MetricType::COUNTER,
        value: |s| s.cpu_seconds,
    },
    Family {
        name: "process_resident_memory_bytes",
        help: "Resident memory size in bytes.",
        kind: MetricType::GAUGE,
        value: |s| s.resident_bytes,
    },
    Family {
        name: "process_virtual_memory_bytes",
        help: "Virtual memory size in bytes.",
        kind: MetricType::GAUGE,
        value: |s| s.virtual_bytes,
    },
    Family {
        name: "process_open_fds",
        help: "Number of open file descriptors.",
        kind: MetricType::GAUGE,
        value: |s| s.open_fds,
    },
    Family {
        name: "process_max_fds",
        help: "Maximum number of open file descriptors (the soft limit).",
        kind: MetricType::GAUGE,
        value: |s| s.max_fds,
    },
    Family {
        name: "process_start_time_seconds",
        help: "Start time of the process since unix epoch in seconds.",
        kind: MetricType::GAUGE,
        value: |s| s.start_time_seconds,
    },
    Family {
        name: "process_threads",
        help: "Number of OS threads in the process.",
        kind: MetricType::GAUGE,
        value: |s| s.threads,
    },
];

/// Registered with the service's registry: reads `/proc` on every gather (every scrape).
pub struct ProcessCollector {
    descs: Vec<Desc>,
}

impl ProcessCollector {
    pub fn new() -> Self {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(f.name.into(), f.help.into(), vec![], Default::default())
                    .expect("static metric definition")
            })
            .collect();
        Self { descs }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sample = Sample::read();
        FAMILIES
            .iter()
            .filter_map(|f| Some(family(f, (f.value)(&sample)?)))
            .collect()
    }
}

fn family(f: &Family, value: f64) -> MetricFamily {
    let mut metric = proto::Metric::default();
    if f.kind == MetricType::COUNTER {
        let mut counter = proto::Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = proto::Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    let mut family = MetricFamily::default();
    family.set_name(f.name.into());
    family.set_help(f.help.into());
    family.set_field_type(f.kind);
    family.set_metric(vec![metric]);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as a thread may name itself.
        let text = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 2213 0 0 0 \
                    1234 567 0 0 20 0 9 0 350000 1090519040 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17127 0 0 0 17 3 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 1234,
                stime: 567,
                threads: 9,
                start_ticks: 350000,
                vsize: 1090519040,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status =
            "Name:\trealtime-servic\nVmPeak:\t  20000 kB\nVmRSS:\t    8192 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_bytes(status), Some(8192.0 * 1024.0));
        assert_eq!(parse_rss_bytes("Name:\tx\n"), None);

        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);

        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1764300000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_764_300_000));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_completely() {
        let s = Sample::read();
        let open = s.open_fds.expect("open fds");
        assert!(open >= 3.0, "stdin, stdout, stderr at least: {open}");
        assert!(s.max_fds.expect("max fds") >= open);
        assert!(s.resident_bytes.expect("rss") > 0.0);
        assert!(s.virtual_bytes.expect("vsize") >= s.resident_bytes.expect("rss"));
        assert!(s.threads.expect("threads") >= 1.0);
        assert!(s.cpu_seconds.expect("cpu") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let started = s.start_time_seconds.expect("start time");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
    }
}
