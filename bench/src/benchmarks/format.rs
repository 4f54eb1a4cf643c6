//! How numbers and tables are written: three significant digits or so (the noise of a run is
//! larger than that), medians with their (min-max) spread when there were several rounds.

use super::aggregate::{Agg, Metric};

/// 1234 -> "1234", 45.67 -> "45.7", 7.691 -> "7.69"; "-" for NaN or infinities.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A count such as errors: whole numbers without decimals.
fn count(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        num(v)
    }
}

/// The median, with "(min-max)" over rounds when there was more than one; "-" when missing.
pub fn agg(a: Option<Agg>) -> String {
    agg_with(a, num)
}

/// Like [`agg`], with errors written as whole numbers.
pub fn metric(a: Option<Agg>, m: Metric) -> String {
    if m == Metric::Errors {
        agg_with(a, count)
    } else {
        agg(a)
    }
}

fn agg_with(a: Option<Agg>, f: fn(f64) -> String) -> String {
    match a {
        None => "-".into(),
        Some(a) if a.n > 1 => format!("{} ({}-{})", f(a.median), f(a.min), f(a.max)),
        Some(a) => f(a.median),
    }
}

pub fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

/// Change from `before` to `after` in percent ("+26 %", "-12.5 %"); for throughput also the
/// factor; for errors the two counts.
pub fn delta(before: Option<Agg>, after: Option<Agg>, m: Metric) -> String {
    let (Some(b), Some(a)) = (before, after) else { return "-".into() };
    if m == Metric::Errors {
        return format!("{} -> {}", count(b.median), count(a.median));
    }
    if b.median == 0.0 {
        return "-".into();
    }
    let factor = a.median / b.median;
    let pct = (factor - 1.0) * 100.0;
    let pct = if pct.abs() >= 10.0 { format!("{pct:+.0} %") } else { format!("{pct:+.1} %") };
    if m == Metric::TokS {
        format!("{pct} ({factor:.2}x)")
    } else {
        pct
    }
}

/// A markdown table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|{}\n", headers.join(" | "), "---|".repeat(headers.len()));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: f64) -> Option<Agg> {
        Agg::of(&[v])
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(45.67), "45.7");
        assert_eq!(num(7.691), "7.69");
        assert_eq!(num(-12.0), "-12.0");
        assert_eq!(num(f64::NAN), "-");
    }

    #[test]
    fn medians_with_spread() {
        assert_eq!(agg(one(207.1)), "207");
        assert_eq!(agg(Agg::of(&[199.0, 207.1, 215.0])), "207 (199-215)");
        assert_eq!(agg(None), "-");
        assert_eq!(metric(one(0.0), Metric::Errors), "0");
        assert_eq!(metric(Agg::of(&[0.0, 2.0, 0.0]), Metric::Errors), "0 (0-2)");
        assert_eq!(metric(one(0.0), Metric::TpotP50), "0.00");
    }

    #[test]
    fn deltas_and_ratios() {
        assert_eq!(delta(one(46.7), one(173.0), Metric::TokS), "+270 % (3.70x)");
        assert_eq!(delta(one(10724.0), one(2325.0), Metric::TtftP95), "-78 %");
        assert_eq!(delta(one(8.79), one(7.69), Metric::TpotP50), "-13 %");
        assert_eq!(delta(one(8.0), one(7.6), Metric::TpotP50), "-5.0 %");
        assert_eq!(delta(one(0.0), one(3.0), Metric::Errors), "0 -> 3");
        assert_eq!(delta(one(0.0), one(3.0), Metric::TtftP95), "-");
        assert_eq!(delta(None, one(3.0), Metric::TokS), "-");
        assert_eq!(ratio(Some(1.8013)), "1.80x");
        assert_eq!(ratio(None), "-");
    }

    #[test]
    fn markdown_table() {
        let t = table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }
}
