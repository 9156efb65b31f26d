//! What every benchmark prints about the machine and the process: the CPU, memory and load
//! before a run, the process's peak RSS, per-thread CPU time from `/proc`, and numbers with
//! thousands separators. Linux only in substance: elsewhere the readings come out as "unknown"
//! or empty rather than failing the run.

use std::collections::HashMap;

/// Per live thread, keyed by (tid, name): nanoseconds on a CPU and waiting for one.
pub(crate) type CpuSnapshot = HashMap<(u32, String), (u64, u64)>;

/// Reads `/proc/self/task/*/schedstat`: nanoseconds on CPU and runnable-but-waiting, without
/// clock-tick rounding. The waiting time shows when other work on the machine steals the cores.
pub(crate) fn thread_cpu() -> CpuSnapshot {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(on_cpu)), Some(Some(waiting))) = (fields.next(), fields.next()) {
            out.insert((tid, name), (on_cpu, waiting));
        }
    }
    out
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let ram = meminfo_kb("MemTotal").map_or_else(
        || "? GB".into(),
        |kb| format!("{:.1} GB", kb as f64 / 1024.0 / 1024.0),
    );
    println!(
        "Machine: {} cores, {cpu}, {ram} RAM; {} build",
        cores(),
        if cfg!(debug_assertions) {
            "DEBUG (numbers not representative)"
        } else {
            "release"
        }
    );
    // Other work on the machine skews every figure below; say how busy it was.
    println!(
        "Load average before the run (1, 5, 15 min): {}",
        load_average()
    );
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub(crate) fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    load.join(" ")
}

fn meminfo_kb(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| status_kb(&s, key))
}

pub(crate) fn status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn peak_rss() -> String {
    status_mb("VmHWM")
}

/// The resident set now.
pub(crate) fn rss() -> String {
    status_mb("VmRSS")
}

fn status_mb(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_kb(&s, key))
        .map_or_else(
            || "unknown".into(),
            |kb| format!("{:.0} MB", kb as f64 / 1024.0),
        )
}

/// CPU time of the calling thread (Linux `schedstat`, nanoseconds; 0 elsewhere).
pub(crate) fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// CPU time of the whole process, every thread, exited ones included (Linux `/proc/self/stat`,
/// in clock ticks of 1/100 s; 0 elsewhere).
pub(crate) fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

pub(crate) fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1}k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0}/s")
    }
}

pub(crate) fn fmt_int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(999), "999");
        assert_eq!(fmt_int(1000), "1,000");
        assert_eq!(fmt_int(1_234_567), "1,234,567");
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            status_kb("Name:\tx\nVmHWM:\t  12345 kB\n", "VmHWM"),
            Some(12345)
        );
    }
}
