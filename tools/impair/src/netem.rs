//! The kernel mechanism's side: the `tc netem` arguments of an impairment, and the qdisc
//! counters read back from `tc`.

use crate::command::{run_blocking, tc};
use crate::link::DirectionStats;
use crate::spec::Impairment;

/// `tc qdisc add … root` arguments for netem with this impairment.
pub(crate) fn netem_qdisc(impairment: &Impairment) -> Vec<String> {
    std::iter::once("netem".to_owned())
        .chain(impairment.to_string().split_whitespace().map(str::to_owned))
        .collect()
}

/// Counters of the root qdisc of `device`, read with `tc -s -j qdisc show`.
pub(crate) fn qdisc_stats(namespace: Option<&str>, device: &str) -> Option<DirectionStats> {
    let in_namespace = namespace.map_or_else(String::new, |namespace| format!("-n {namespace}"));
    let output = run_blocking(tc(
        &format!("{in_namespace} -s -j qdisc show dev {device}"),
        &[],
    ))
    .ok()?;
    parse_qdisc_stats(&output)
}

/// Reads the root qdisc's counters from `tc -s -j qdisc show dev X`:
/// `[{"kind":"netem","root":true,…,"bytes":…,"packets":…,"drops":…}]`.
fn parse_qdisc_stats(json: &str) -> Option<DirectionStats> {
    let qdiscs: Vec<serde_json::Value> = serde_json::from_str(json).ok()?;
    let root = qdiscs
        .iter()
        .find(|qdisc| qdisc.get("root").and_then(serde_json::Value::as_bool) == Some(true))?;
    let counter = |name: &str| root.get(name).and_then(serde_json::Value::as_u64);
    Some(DirectionStats {
        delivered_packets: counter("packets")?,
        delivered_bytes: counter("bytes")?,
        dropped_packets: counter("drops")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::parse;

    #[test]
    fn reads_root_qdisc_counters_from_tc_json() {
        let json = r#"[{"kind":"netem","handle":"8001:","root":true,"refcnt":2,
            "options":{"limit":1000,"delay":{"delay":0.02}},"bytes":5400,"packets":40,
            "drops":3,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]"#;
        assert_eq!(
            parse_qdisc_stats(json),
            Some(DirectionStats {
                delivered_packets: 40,
                delivered_bytes: 5400,
                dropped_packets: 3
            })
        );
        assert_eq!(parse_qdisc_stats("[]"), None);
        assert_eq!(parse_qdisc_stats("not json"), None);
    }

    #[test]
    fn netem_arguments_are_the_displayed_impairment() {
        assert_eq!(
            netem_qdisc(&parse("loss 1% delay 20ms")),
            ["netem", "delay", "20ms", "loss", "1%"]
        );
    }
}
