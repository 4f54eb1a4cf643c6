//! CPU accounting from /proc, to tell how much of the machine the run really had: the server's
//! own CPU time, the bench's, and everything else ("other"), which on a shared machine is the
//! contention that makes numbers meaningless. Ticks are USER_HZ, 100 per second on Linux.

/// Clock ticks per second of /proc times (USER_HZ; 100 on every mainstream Linux build).
pub const TICKS_PER_S: f64 = 100.0;

/// Machine-wide CPU ticks from the first (`cpu `) line of /proc/stat.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MachineTicks {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// Time the hypervisor gave to other guests while this one wanted to run.
    pub steal: u64,
}

/// Parses the aggregate `cpu` line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already inside user/nice).
    if v.len() < 4 {
        return None;
    }
    Some(MachineTicks { busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7), steal: at(7) })
}

/// utime + stime (ticks) from the text of /proc/PID/stat.
pub fn parse_pid_stat(text: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: utime is field 14, stime 15 -> indices 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_line() {
        let text = "cpu  326895 248957 37491 45857 688 10 215 327 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n";
        let t = parse_proc_stat(text).unwrap();
        assert_eq!(t.busy, 326895 + 248957 + 37491 + 10 + 215 + 327);
        assert_eq!(t.steal, 327);
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[test]
    fn pid_stat_with_odd_name() {
        let text = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 3 0 5000 1000 100";
        assert_eq!(parse_pid_stat(text), Some(290));
        assert_eq!(parse_pid_stat("garbage"), None);
    }
}
