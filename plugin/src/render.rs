//! Plain-text output, laid out as kubectl lays out its own: columns three spaces apart, ages
//! as `kubectl get` writes them. Pure: reports and `now` in, text out.

use crate::report::{AppLine, AppReport};
use crate::sessions::SessionsReport;
use k8s_openapi::jiff::Timestamp;
use std::fmt::Write as _;

/// Columns aligned three spaces apart, no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `kubectl get`'s age: `40s`, `5m10s`, `3h`, `2d4h`, `400d`, `3y20d`.
pub fn age(since: Option<Timestamp>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "<unknown>".into();
    };
    let seconds = now.as_second() - since.as_second();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let years = hours / 24 / 365;
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// `1 worker`, `2 workers`.
pub fn plural(n: i32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// The first characters of a template hash: enough to tell templates apart in a table.
pub fn short(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}

/// `kubectl get meteor`, with a column of the conditions worth a look.
pub fn apps(lines: &[AppLine], all_namespaces: bool, now: Timestamp) -> String {
    if lines.is_empty() {
        return "No MeteorApps found.\n".into();
    }
    let mut headers = vec!["NAME", "READY", "REPLICAS", "URL", "AGE", "ATTENTION"];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let mut row = vec![
                l.name.clone(),
                l.ready.clone(),
                l.replicas.clone(),
                l.url.clone(),
                age(l.created, now),
                dash(&l.attention.join(",")),
            ];
            if all_namespaces {
                row.insert(0, l.namespace.clone());
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// `status APP`.
pub fn app(report: &AppReport, now: Timestamp) -> String {
    let line = &report.line;
    let mut out = table(
        &["NAME", "READY", "REPLICAS", "URL", "AGE"],
        &[vec![
            line.name.clone(),
            line.ready.clone(),
            line.replicas.clone(),
            line.url.clone(),
            age(line.created, now),
        ]],
    );
    out.push('\n');
    let _ = writeln!(out, "Namespace:    {}", line.namespace);
    let _ = writeln!(out, "Image:        {}", report.image);
    let mut replicas = match report.desired_replicas {
        0 => "0 app processes (parked)".to_string(),
        r => plural(r, "app process", "app processes"),
    };
    if report.worker_replicas > 0 {
        let _ = write!(
            replicas,
            ", {}",
            plural(report.worker_replicas, "worker", "workers")
        );
    }
    let _ = writeln!(out, "Replicas:     {replicas}");
    let generation = match (report.generation, report.observed_generation) {
        (Some(g), Some(o)) if g == o => format!("{g} (observed)"),
        (Some(g), Some(o)) => format!(
            "{g} (the status speaks for {o}: the operator has not seen the latest spec yet)"
        ),
        (Some(g), None) => format!("{g} (not observed yet)"),
        (None, _) => "-".into(),
    };
    let _ = writeln!(out, "Generation:   {generation}");
    let routing = &report.routing;
    let mut way_in = if routing.proxy && routing.proxy_replicas.is_none() {
        "proxy on (not reported in status yet)".to_string()
    } else if routing.proxy {
        format!(
            "proxy {}/{} ready",
            routing.proxy_ready_replicas.unwrap_or(0),
            routing.proxy_replicas.unwrap_or(0)
        )
    } else {
        "proxy off (the Service selects the app pods)".to_string()
    };
    if let Some(address) = &routing.address {
        let _ = write!(way_in, ", address {address}");
    }
    let _ = writeln!(out, "Routing:      {way_in}");

    out.push_str("\nConditions:\n");
    if report.conditions.is_empty() {
        out.push_str("  none yet: the operator has not visited this app\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    age(Some(c.since), now),
                    c.message.clone(),
                ]
            })
            .collect();
        indent(
            &mut out,
            &table(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], &rows),
        );
    }

    let rollout = &report.rollout;
    out.push_str("\nRollout:\n");
    if let Some(progressing) = &rollout.progressing {
        let _ = writeln!(
            out,
            "  Progressing:      {progressing} (for {})",
            age(rollout.since, now)
        );
    }
    match (&rollout.available_template, &rollout.available_image) {
        (Some(t), image) => {
            let _ = writeln!(
                out,
                "  Last available:   template {} (image {})",
                short(t),
                image.as_deref().unwrap_or("?")
            );
        }
        (None, _) => out.push_str("  Last available:   none recorded (no rollout has completed)\n"),
    }
    match &rollout.failed_template {
        Some(t) => {
            let _ = writeln!(
                out,
                "  Rolled back:      template {} (image {}) failed: {}{}",
                short(t),
                rollout.failed_image.as_deref().unwrap_or("?"),
                rollout.failure.as_deref().unwrap_or("?"),
                rollout
                    .rolled_back_at
                    .map(|t| format!(" ({} ago)", age(Some(t), now)))
                    .unwrap_or_default()
            );
        }
        None => out
            .push_str("  Rolled back:      no (status keeps a rollback until the spec changes)\n"),
    }

    out.push_str("\nAutoscaler:\n");
    match &report.autoscaler {
        None => out.push_str("  none (spec.autoscaling is not set)\n"),
        Some(a) => {
            let mut targets = vec![format!("CPU {}%", a.target_cpu)];
            if let Some(m) = a.target_memory_utilization_percentage {
                targets.push(format!("memory {m}%"));
            }
            if let Some(s) = a.sessions_per_replica {
                targets.push(format!("{s} sessions per pod"));
            }
            let _ = writeln!(
                out,
                "  {} to {} replicas, target {}",
                a.min_replicas,
                a.max_replicas,
                targets.join(", ")
            );
            let seen = |v: Option<i32>, unit: &str| {
                v.map_or_else(|| "unknown".to_string(), |v| format!("{v}{unit}"))
            };
            let _ = writeln!(
                out,
                "  current {}, desired {}, CPU {}",
                seen(a.current_replicas, ""),
                seen(a.desired_replicas, ""),
                seen(a.current_cpu, "%")
            );
        }
    }

    out.push_str("\nPods:\n");
    if report.pods.is_empty() {
        out.push_str("  none\n");
    } else {
        let marker = |template: &Option<String>| {
            let Some(t) = template else {
                return "-".to_string();
            };
            let mark = if rollout.failed_template.as_ref() == Some(t) {
                " (failed)"
            } else if rollout.available_template.as_ref() == Some(t) {
                " (available)"
            } else {
                ""
            };
            format!("{}{mark}", short(t))
        };
        let rows: Vec<Vec<String>> = report
            .pods
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    dash(&p.tier),
                    if p.template.is_some() {
                        marker(&p.template)
                    } else {
                        p.pod_template_hash.clone().unwrap_or_else(|| "-".into())
                    },
                    p.image.clone().unwrap_or_else(|| "-".into()),
                    p.ready.clone(),
                    p.status.clone(),
                    p.restarts.to_string(),
                    age(p.created, now),
                    p.sessions.map_or_else(|| "-".into(), |s| s.to_string()),
                ]
            })
            .collect();
        indent(
            &mut out,
            &table(
                &[
                    "NAME", "TIER", "VERSION", "IMAGE", "READY", "STATUS", "RESTARTS", "AGE",
                    "SESSIONS",
                ],
                &rows,
            ),
        );
    }
    if let Some(sessions) = &report.sessions {
        let _ = writeln!(out, "\nSessions:     {}", sessions_summary(sessions));
    }
    out
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

/// One line: how many sessions, counted by whom, or why not.
pub fn sessions_summary(report: &SessionsReport) -> String {
    let mut text = if report.counted {
        format!(
            "{} open, counted by {} of {} proxies",
            report.total,
            report.answered(),
            report.proxies.len()
        )
    } else {
        "not counted".to_string()
    };
    if let Some(note) = &report.note {
        let _ = write!(text, " ({note})");
    }
    for proxy in report.proxies.iter().filter(|p| !p.answered) {
        let _ = write!(
            text,
            "\n  {}: {}",
            proxy.pod,
            proxy.error.as_deref().unwrap_or("no answer")
        );
    }
    text
}

/// `sessions APP`.
pub fn sessions(report: &SessionsReport) -> String {
    let mut out = String::new();
    if report.counted {
        let rows: Vec<Vec<String>> = report
            .pods
            .iter()
            .map(|p| {
                vec![
                    p.pod.clone().unwrap_or_else(|| "(no app pod)".into()),
                    p.address.clone().unwrap_or_else(|| "-".into()),
                    p.sessions.to_string(),
                    p.websockets.to_string(),
                    p.state.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["POD", "ADDRESS", "SESSIONS", "WEBSOCKETS", "STATE"],
            &rows,
        ));
        out.push('\n');
    }
    let _ = writeln!(out, "{}: {}", report.app, sessions_summary(report));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let now = at("2025-06-01T00:00:00Z");
        let ago = |secs: i64| {
            age(
                Some(Timestamp::from_second(now.as_second() - secs).unwrap()),
                now,
            )
        };
        assert_eq!(ago(40), "40s");
        assert_eq!(ago(119), "119s");
        assert_eq!(ago(310), "5m10s");
        assert_eq!(ago(300), "5m");
        assert_eq!(ago(3 * 3600 + 60), "3h1m");
        assert_eq!(ago(20 * 3600), "20h");
        assert_eq!(ago(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(ago(400 * 86400), "400d");
        assert_eq!(ago(3 * 365 * 86400 + 20 * 86400), "3y20d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn tables_align_three_spaces_apart() {
        let text = table(
            &["NAME", "READY"],
            &[
                vec!["chat".into(), "True".into()],
                vec!["todos-long".into(), "".into()],
            ],
        );
        assert_eq!(text, "NAME         READY\nchat         True\ntodos-long\n");
    }
}
