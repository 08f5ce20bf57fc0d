//! `protocols`: one large file by protocol 1 (the chunked API), by tus in
//! order, and by tus concatenation (partials in parallel, joined at the end),
//! with the single-request ceiling beside them, all on one far end in the same
//! run. In-process that is one mock serving both protocols and keeping the
//! bytes (a sink cannot join partials); a far end elsewhere serves what it
//! serves, and the tus sides it cannot serve are skipped with the reason.

use idb_engine::Protocol;
use idb_mock::TusProfile;
use idb_wire::tus::S3_MIN_PART;

use super::{TARGET_LATENCY, ms};
use crate::far_end::{Endpoint, Knobs};
use crate::measure::median;
use crate::point::{PointSpec, Runner, SideSpec};
use crate::report::human;
use crate::results::{Point, ScenarioResult, SkippedSide};
use crate::tus_calls::Offer;

/// Target (shown, never asserted): tus by concatenation / protocol 1, at 50 ms.
const CONCAT_TARGET: f64 = 3.0;

/// The in-process mock's tus profile: the service's server (its part-size
/// rule, partials removed by the join that copies them).
const PROFILE: TusProfile = TusProfile::S3;

/// The smallest file the engine sends by concatenation (two of the smallest
/// partials, as its tus client decides); a smaller one goes in order.
const CONCAT_MIN_FILE: u64 = 2 * S3_MIN_PART;

/// The sides' keys: the ratios are `tus-concat/chunked` and
/// `tus-in-order/chunked`.
const CHUNKED: &str = "chunked";
const IN_ORDER: &str = "tus-in-order";
const CONCAT: &str = "tus-concat";

impl Runner<'_> {
    /// `protocols`: the large file by each protocol on the same far end.
    pub(crate) async fn protocols(&self) -> anyhow::Result<ScenarioResult> {
        let file = self.data("large.bin", self.config.size, "large").await?;
        let (mut label, latency) = self.one_point();
        // A far end elsewhere has its own caps (the CLI says the option does
        // nothing there); the scenario runs on its path as it is.
        let cap = self
            .config
            .protocols_bandwidth
            .filter(|_| !self.far.is_remote());
        let knobs = Knobs {
            tus: Some(PROFILE),
            store: true,
            bandwidth: cap,
            ..Knobs::plain(latency.unwrap_or_default(), file.size)
        };
        let title = format!(
            "protocols: one {} file by protocol 1 and by tus, in order and by concatenation{}",
            human(file.size),
            cap.map_or_else(String::new, |c| format!(", {}/s per connection", human(c)))
        );
        if let Some(skipped) = self.skipped("protocols", title.clone(), &knobs) {
            return Ok(skipped);
        }
        if let Some(cap) = cap {
            label = format!("{}/s per connection, {label}", human(cap));
        }
        let endpoint = self.far.endpoint(&label, &knobs).await?;
        let skipped_sides = self.tus_skips(&endpoint).await?;
        let mut sides = vec![
            SideSpec::engine_with(
                CHUNKED,
                "engine, protocol 1 (--protocol chunked), the CLI's defaults otherwise".into(),
                vec![file.clone()],
                |c| c.protocol = Protocol::Chunked,
            ),
            SideSpec::engine_with(
                IN_ORDER,
                "engine, tus in order (--protocol tus --no-concat)".into(),
                vec![file.clone()],
                |c| {
                    c.protocol = Protocol::Tus;
                    c.tus_concat = false;
                },
            ),
            SideSpec::engine_with(
                CONCAT,
                "engine, tus by concatenation (--protocol tus), the CLI's defaults otherwise"
                    .into(),
                vec![file.clone()],
                |c| {
                    c.protocol = Protocol::Tus;
                    c.tus_concat = true;
                },
            ),
        ];
        sides.retain(|side| !skipped_sides.iter().any(|s| s.key == side.key));
        let mut ceiling = SideSpec::ceiling(file.clone());
        ceiling.label = "one request carrying the whole file (protocol 1)".into();
        sides.push(ceiling);
        let mut spec = PointSpec::on(label, latency, endpoint, sides);
        let target = (latency == Some(TARGET_LATENCY)).then_some(CONCAT_TARGET);
        spec.ratios = vec![
            (CONCAT.into(), CHUNKED.into(), target),
            (IN_ORDER.into(), CHUNKED.into(), None),
            (CONCAT.into(), "ceiling".into(), None),
        ];
        spec.skipped_sides = skipped_sides;
        let point = self.point("protocols", spec).await?;
        let mut result = self.result("protocols", title, Vec::new());
        result.notes.push(if self.far.is_remote() {
            "every side uploads to the far end given with --server, as it serves protocol 1 \
             and tus; the tus sides' times include the OPTIONS probe, and concatenation's the \
             joining POST"
                .into()
        } else {
            format!(
                "every side uploads to the same mock, {}, serving protocol 1 (strict: one chunk \
                 in flight) and tus in its {} profile (the service's part-size rule; the \
                 joining POST copies the partials inside the request and removes them, as the \
                 service does), keeping the bytes in a temporary directory (a sink cannot join \
                 partials); each repetition's files are removed after it. The tus sides' times \
                 include the OPTIONS probe, and concatenation's the joining POST. With the \
                 CLI's default --protocol auto, idb uploads to this mock as tus-concat does",
                ms(self.config.latency),
                PROFILE.as_str()
            )
        });
        if file.size < CONCAT_MIN_FILE {
            result.notes.push(format!(
                "the file is smaller than {}: the engine sends it as one upload, in order, \
                 even with concatenation on, so tus-concat measures tus in order here",
                human(CONCAT_MIN_FILE)
            ));
        } else if let Some(note) = partials_note(&point) {
            result.notes.push(note);
        }
        // Only where every connection has the path to itself: with a cap per
        // connection, partials add connections, which one request cannot.
        if cap.is_none() && !self.far.is_remote() {
            result.notes.extend(ceiling_note(&point));
        }
        result.points.push(point);
        Ok(result)
    }

    /// The tus sides the far end cannot serve, and why (said as progress
    /// too): none when it serves tus with concatenation and joins partials.
    async fn tus_skips(&self, endpoint: &Endpoint) -> anyhow::Result<Vec<SkippedSide>> {
        let tus = endpoint.tus_calls()?;
        let offer = tus.offer().await?;
        let skips: Vec<(&str, &str, String)> = match &offer {
            Offer::Absent(answered) => {
                let reason = format!(
                    "the far end serves no tus at {} (OPTIONS answered {answered}); start it \
                     with --tus (idb mock-server --tus) to measure protocol 2",
                    tus.endpoint()
                );
                vec![
                    (IN_ORDER, "engine, tus in order", reason.clone()),
                    (CONCAT, "engine, tus by concatenation", reason),
                ]
            }
            Offer::Tus { extensions } if !offer.concatenation() => vec![(
                CONCAT,
                "engine, tus by concatenation",
                format!(
                    "the far end's tus at {} does not serve concatenation (Tus-Extension: \
                     {extensions:?})",
                    tus.endpoint()
                ),
            )],
            Offer::Tus { .. } => match tus.joins(&offer).await? {
                Ok(()) => Vec::new(),
                Err(why) => vec![(
                    CONCAT,
                    "engine, tus by concatenation",
                    format!(
                        "the far end cannot join partial uploads at {} ({why}); start it with a \
                         store (idb mock-server --tus, without --sink) to measure concatenation",
                        tus.endpoint()
                    ),
                )],
            },
        };
        Ok(skips
            .into_iter()
            .map(|(key, label, reason)| {
                self.note(format!("protocols: {key} skipped: {reason}"));
                SkippedSide {
                    key: key.into(),
                    label: label.into(),
                    reason,
                }
            })
            .collect())
    }
}

/// When the one request, which has no round trip to hide, is itself below
/// the concatenation target over protocol 1: says so, from this run's numbers.
fn ceiling_note(point: &Point) -> Option<String> {
    let target = point
        .ratios
        .iter()
        .find(|r| r.key == format!("{CONCAT}/{CHUNKED}"))?
        .target?;
    let rate = |key: &str| {
        let side = point.sides.iter().find(|s| s.key == key)?;
        Some(side.summary.whole_mib_s.median)
    };
    below_target_note(target, rate("ceiling")? / rate(CHUNKED)?)
}

/// The note of [`ceiling_note`], given one request's rate over protocol 1's.
fn below_target_note(target: f64, ceiling_over_chunked: f64) -> Option<String> {
    (ceiling_over_chunked < target).then(|| {
        format!(
            "one request, which has no round trip left to hide, reaches {ceiling_over_chunked:.2}x \
             protocol 1 here, below the {target:.0}x target: on this path round trips are not \
             what bounds protocol 1, so hiding them cannot reach the target; a path where each \
             connection is the limit (--protocols-bandwidth 50MiB) shows what partials in \
             parallel add"
        )
    })
}

/// How many partials tus-concat sent (the in-process mock's count of the
/// uploads it created, less the joined one), if known.
fn partials_note(point: &Point) -> Option<String> {
    let side = point.sides.iter().find(|s| s.key == CONCAT)?;
    let uploads = median(
        side.reps
            .iter()
            .filter_map(|r| r.tus_uploads.map(|u| u as f64)),
    )?;
    let partials = (uploads - 1.0).max(1.0);
    Some(format!(
        "tus-concat sent the file as {partials} partial uploads (about {} each) joined into \
         one (median of the repetitions, counted by the mock)",
        human((side.bytes as f64 / partials) as u64)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceiling_below_the_target_is_said() {
        let note = below_target_note(3.0, 1.85).expect("1.85x is below 3x");
        assert!(note.contains("reaches 1.85x protocol 1"), "{note}");
        assert_eq!(below_target_note(3.0, 3.4), None);
    }
}
