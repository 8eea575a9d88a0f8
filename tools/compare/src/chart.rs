//! The comparison chart: every transport's latency distribution, side by side, in one image.
//!
//! The image has two panels:
//!
//! * **Left, latency by percentile**, the way HdrHistogram plots it. The x axis is a "nines"
//!   scale, `x = log10(1 / (1 - p/100))`: 90% sits at 1, 99% at 2, 99.9% at 3, so every extra
//!   nine of the tail gets as much width as the whole body of the distribution. That is the
//!   point of the plot: a transport that is fast at the median but stalls once in a thousand
//!   events shows up as a line that bends upwards on the right. The y axis is logarithmic
//!   because the differences that matter (0.3 ms against 3 ms at p50, 10 ms against 80 ms at
//!   p99.9) are ratios, not differences.
//! * **Right, p50 / p99 / p99.9 per transport**, as grouped bars on a log axis with the same
//!   range and ticks, so the three numbers people quote can be read off without tracing lines.
//!
//! Each transport keeps its colour in both panels, so a line on the left and its bars on the
//! right are recognisably the same transport.
//!
//! Drawing is done by [`plotters`] (log axes, pinned ticks, legends, line series) into an SVG
//! string; the PNG is that same SVG rasterised by [`resvg`], so the two can never disagree.
//!
//! Input is measured data and may be rough: an empty list, a series without points, zero
//! latencies (which a log axis cannot show, so they are drawn at 1 µs), NaN or infinite values
//! (skipped). None of these panic; a panel with nothing to draw says "no data".
//!
//! ```
//! use streamgate_compare::chart::{latency_chart_svg, ChartText, LatencySeries};
//!
//! let ws = LatencySeries {
//!     name: "ws".to_owned(),
//!     points: vec![(0.0, 180.0), (50.0, 310.0), (99.0, 900.0), (99.9, 2_100.0), (100.0, 6_300.0)],
//!     p50_us: 310.0,
//!     p99_us: 900.0,
//!     p999_us: 2_100.0,
//!     max_us: 6_300.0,
//! };
//! let text = ChartText { title: "publish → receive latency".to_owned(), subtitle: String::new() };
//! let svg = latency_chart_svg(&text, &[ws]);
//! assert!(svg.starts_with("<svg"));
//! ```

use plotters::chart::MeshStyle;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One transport's latency distribution.
///
/// `points` are `(percentile in 0..=100, latency in microseconds)`, ascending in percentile, as
/// HdrHistogram's `iter_quantiles` yields them (`quantile_iterated_to() * 100.0`,
/// `value_iterated_to()`). The summary values feed the bar panel; they are passed separately
/// because the caller has the exact numbers from the histogram, while `points` are only samples
/// of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySeries {
    /// Legend and axis label, e.g. `"ws-deflate"`. Any string; very long ones are shortened on
    /// the chart.
    pub name: String,
    /// `(percentile, latency µs)` pairs, ascending in percentile. A 100% point (the maximum)
    /// is drawn at the right edge of the percentile axis.
    pub points: Vec<(f64, f64)>,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs.
    pub p999_us: f64,
    /// Largest latency seen, µs. Only widens the latency axis, so the worst case is always on
    /// it even when `points` stop short of it.
    pub max_us: f64,
}

/// The words around the chart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChartText {
    /// Large heading, e.g. `"streamgate compare: publish → receive latency"`. Shortened with
    /// "…" if it would run off the image (past about 100 characters).
    pub title: String,
    /// One smaller line under the title, e.g. the command line and the machine it ran on.
    /// Shortened with "…" if it would run off the image.
    pub subtitle: String,
}

/// Renders the comparison chart (1200 × 520) as a self-contained SVG document.
///
/// The document needs no external fonts, stylesheets or scripts, so it looks the same in a
/// browser, on GitHub and in [`latency_chart_png`]. Its text asks for a list of common
/// sans-serif families ending in the generic `sans-serif`, so every viewer finds a font.
pub fn latency_chart_svg(text: &ChartText, series: &[LatencySeries]) -> String {
    let data = Prepared::new(series);
    let mut svg = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw_chart(&root, text, &data).and_then(|()| root.present())
    };
    match drawn {
        Ok(()) => svg,
        // Drawing into a String does no I/O, so this would be a plotters bug. Even then a
        // report is better off with an image that says so than with a panic that loses every
        // measurement taken before it.
        Err(err) => fallback_svg(&format!("chart could not be drawn: {err}")),
    }
}

/// Renders the same chart as [`latency_chart_svg`] into PNG bytes (1200 × 520).
///
/// Text is set in fonts installed on this machine, found the way desktop programs find them
/// (fontconfig's configuration, then the usual directories). A machine with no fonts at all
/// would produce a PNG without a single label, so that is an error instead; on Debian the
/// `fonts-dejavu-core` package is enough.
#[cfg(feature = "png")]
pub fn latency_chart_png(text: &ChartText, series: &[LatencySeries]) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    use resvg::tiny_skia;

    let tree = png::parse(&latency_chart_svg(text, series))?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        tiny_skia::Pixmap::new(size.width(), size.height()).context("allocating the PNG canvas")?;
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().context("encoding the chart PNG")
}

/// Without the `png` feature there is no rasteriser (resvg and its font stack take about a
/// minute to build); the function stays so that callers compile either way, and says what is
/// missing.
#[cfg(not(feature = "png"))]
pub fn latency_chart_png(_text: &ChartText, _series: &[LatencySeries]) -> anyhow::Result<Vec<u8>> {
    anyhow::bail!(
        "this build has no PNG output: rebuild with the `png` feature, or use the SVG chart"
    )
}

/// The SVG → PNG half: fonts, and parsing with them.
#[cfg(feature = "png")]
mod png {
    use anyhow::Context as _;
    use resvg::usvg::{self, fontdb};

    use super::FONT_FAMILIES;

    /// Parses the chart SVG with the system's fonts; text is shaped into outlines here.
    pub(super) fn parse(svg: &str) -> anyhow::Result<usvg::Tree> {
        let mut options = usvg::Options::default();
        let fonts = options.fontdb_mut();
        fonts.load_system_fonts();
        let family = sans_family(fonts).context(
            "no fonts found for the PNG chart's text; install some (on Debian: \
             fonts-dejavu-core), or use the SVG chart",
        )?;
        // fontdb maps the generic families to Arial and Times New Roman, which Linux machines
        // rarely have, so `sans-serif` would match nothing. Point it at a face that is really
        // there; `serif` too, because that is usvg's last resort when no family matches.
        fonts.set_sans_serif_family(family.clone());
        fonts.set_serif_family(family);
        usvg::Tree::from_str(svg, &options).context("parsing the chart SVG")
    }

    /// The family to stand in for `sans-serif`: the first of [`FONT_FAMILIES`] that is
    /// installed, or failing that any font at all, since some text beats none.
    fn sans_family(fonts: &fontdb::Database) -> Option<String> {
        let installed = |wanted: &str| {
            fonts
                .faces()
                .flat_map(|face| face.families.iter())
                .find(|(family, _)| family.eq_ignore_ascii_case(wanted))
                .map(|(family, _)| family.clone())
        };
        FONT_FAMILIES
            .split(',')
            .map(str::trim)
            .filter(|name| *name != "sans-serif")
            .find_map(installed)
            .or_else(|| {
                fonts
                    .faces()
                    .find_map(|face| face.families.first())
                    .map(|(family, _)| family.clone())
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Look and layout.

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 520;
/// Height of the title and subtitle band above the two panels.
const HEADER_HEIGHT: u32 = 62;
/// Width of the percentile panel; the bar panel gets the rest. The percentile panel is wider
/// because its x axis carries six labelled nines.
const LEFT_WIDTH: u32 = 640;
/// Height of the percentile panel's x axis: tick labels plus the axis title.
const PERCENTILE_LABEL_HEIGHT: u32 = 44;
/// Width of either panel's latency labels ("100 ms") and axis title.
const Y_LABEL_WIDTH: u32 = 72;

/// DejaVu first because Debian and most CI images have it (and the PNG is made there), then
/// what macOS and Windows have, then the generic name every SVG viewer understands.
const FONT_FAMILIES: &str = "DejaVu Sans, Liberation Sans, Helvetica, Arial, sans-serif";

/// The Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2008): eight colours that stay
/// distinct under the common forms of colour blindness. Ordered so the one weak on white,
/// yellow, is only used once there are eight series. A ninth series reuses the first colour,
/// with a dashed line (see [`dashes`]).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0x00, 0x00, 0x00), // black
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];

const TEXT_GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);
const GRID_GREY: RGBColor = RGBColor(0xE4, 0xE4, 0xE4);
const AXIS_GREY: RGBColor = RGBColor(0x88, 0x88, 0x88);

/// The three bars of a group, told apart by strength of the transport's own colour: the group
/// still reads as one transport, and the tail stands out darkest.
const BAR_LEVELS: [(&str, f64); 3] = [("p50", 0.35), ("p99", 0.65), ("p99.9", 1.0)];

/// A log axis cannot show 0, and nothing measured here is faster than a microsecond, so
/// smaller values (zero, or negative after clock skew) are drawn at 1 µs.
const FLOOR_US: f64 = 1.0;
/// Values beyond a day are drawn at a day. They can only be garbage, and an unbounded value
/// (say `f64::MAX`) would make the axis end at infinity.
const CEILING_US: f64 = 86_400e6;
/// Rightmost point the nines axis can reach, 99.9999%: a run of this tool has too few samples
/// to say anything further out.
const MAX_NINES: f64 = 6.0;
/// Names longer than this are shortened with "…" in the middle, so one odd name cannot squeeze
/// the chart. Enough for the longest real one, "wt-stream-per-event ×10000".
const MAX_NAME_CHARS: usize = 26;

// ---------------------------------------------------------------------------------------------
// Scales and labels.

/// Maps a percentile to the nines axis: `log10(1 / (1 - p/100))`, so 0% → 0, 90% → 1,
/// 99% → 2, 99.9% → 3. 100% (the maximum) is infinitely far out and comes back as `+inf` for
/// the caller to clamp. Invalid percentiles (NaN, negative) give `None`; above 100 counts as 100.
fn nines(percentile: f64) -> Option<f64> {
    if percentile.is_nan() || percentile < 0.0 {
        return None;
    }
    let remaining = 1.0 - percentile.min(100.0) / 100.0;
    if remaining <= 0.0 {
        return Some(f64::INFINITY);
    }
    // `-log10(x)` rather than `log10(1/x)`: one rounding fewer, so 99.9 lands on 3 within ulps.
    Some(-remaining.log10())
}

/// The inverse of [`nines`], for tick labels.
fn percentile_at(nines: f64) -> f64 {
    100.0 * (1.0 - 10f64.powf(-nines))
}

/// Tick label on the nines axis ("0%", "50%", "99%", "99.99%"), with as many decimals as the
/// tick has nines past the second, so no label is rounded into a lie.
fn percentile_label(nines: f64) -> String {
    let decimals = (nines.round() as usize).saturating_sub(2);
    let text = format!("{:.*}", decimals, percentile_at(nines));
    format!("{}%", trim_zeros(&text))
}

/// A latency for people: "350 µs", "2.5 ms", "1.2 s". The unit keeps the number between 1 and
/// 999, and at most three significant digits are shown, which is all a log axis can resolve.
fn latency_label(us: f64) -> String {
    let (value, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{} {unit}", trim_zeros(&format!("{value:.decimals$}")))
}

/// "2.50" → "2.5", "3.00" → "3"; integers are left alone ("100" stays "100").
fn trim_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

/// A latency ready for the log axis: `None` for NaN and infinities (nothing honest to draw),
/// anything else clamped to [`FLOOR_US`]..=[`CEILING_US`].
fn plottable_us(us: f64) -> Option<f64> {
    us.is_finite().then(|| us.clamp(FLOOR_US, CEILING_US))
}

/// 1, 2 and 5 times `10^decade`: the round numbers people expect on a log axis.
fn one_two_five(decade: i32) -> [f64; 3] {
    let base = 10f64.powi(decade);
    [base, 2.0 * base, 5.0 * base]
}

/// The latency axis both panels use: from the 1-2-5 value at or below the smallest latency to
/// the one at or above the largest, ticked at 1-2-5 values; at every multiple of a decade when
/// that gives too few ticks, at whole decades when it gives too many.
#[derive(Debug, Clone, PartialEq)]
struct LatencyAxis {
    low: f64,
    high: f64,
    ticks: Vec<f64>,
}

impl LatencyAxis {
    /// Range for a chart with no data, so even an empty one has plausible axes.
    const EMPTY: (f64, f64) = (100.0, 100_000.0);
    /// About what fits on a 350-pixel axis with room between the labels.
    const MAX_TICKS: usize = 10;
    /// Fewer than this and the axis is hard to read.
    const MIN_TICKS: usize = 4;
    /// Slack for comparing against round values that floating point misses by an ulp.
    const SLACK: f64 = 1e-9;

    /// Expects only values from [`plottable_us`]: finite and positive.
    fn new(values: impl Iterator<Item = f64>) -> Self {
        let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (min, max) = if min <= max { (min, max) } else { Self::EMPTY };
        let low_decade = min.log10().floor() as i32;
        let high_decade = max.log10().ceil() as i32;
        let round_values = || {
            (low_decade..=high_decade)
                .flat_map(one_two_five)
                .chain(std::iter::once(10f64.powi(high_decade)))
        };
        let low = round_values()
            .rfind(|v| *v <= min * (1.0 + Self::SLACK))
            .unwrap_or(min);
        // `> low` so that a single value (every latency the same) still gets a range.
        let high = round_values()
            .find(|v| *v >= max * (1.0 - Self::SLACK) && *v > low)
            .unwrap_or(low * 10.0);
        let on_axis = |v: &f64| *v >= low * (1.0 - Self::SLACK) && *v <= high * (1.0 + Self::SLACK);
        let mut ticks: Vec<f64> = round_values().filter(on_axis).collect();
        if ticks.len() < Self::MIN_TICKS {
            // A narrow range (200 µs to 500 µs) would get only its two ends; every whole
            // multiple of the decade gives a log axis enough landmarks to read it by.
            ticks = (low_decade..=high_decade)
                .flat_map(|decade| (1..10).map(move |m| f64::from(m) * 10f64.powi(decade)))
                .filter(on_axis)
                .collect();
        }
        if ticks.len() > Self::MAX_TICKS {
            let decades = usize::try_from(high_decade - low_decade).unwrap_or(1);
            ticks = (low_decade..=high_decade)
                .step_by(decades.div_ceil(Self::MAX_TICKS).max(1))
                .map(|decade| 10f64.powi(decade))
                .filter(on_axis)
                .collect();
        }
        Self { low, high, ticks }
    }
}

/// Text from the caller, made safe to show: control characters (which XML forbids, and which
/// would break the SVG) become spaces, and anything longer than `max_chars` is cut with "…".
fn clean_text(text: &str, max_chars: usize) -> String {
    let chars = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    if text.chars().count() <= max_chars {
        return chars.collect();
    }
    let mut short: String = chars.take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// A series name made safe to show, like [`clean_text`], but shortened in the middle: names
/// of related series differ at the end ("… ×100", "… ×1000"), so the end must survive.
fn clean_name(name: &str) -> String {
    let count = name.chars().count();
    if count <= MAX_NAME_CHARS {
        return clean_text(name, MAX_NAME_CHARS);
    }
    let tail = (MAX_NAME_CHARS - 1) * 2 / 5;
    let head = MAX_NAME_CHARS - 1 - tail;
    let kept: String = name.chars().take(head).collect();
    let end: String = name.chars().skip(count - tail).collect();
    clean_text(&format!("{kept}…{end}"), MAX_NAME_CHARS)
}

/// Rough width of `text` at `px`, for deciding whether it fits. 0.58 em per character is
/// DejaVu Sans' average and close to what plotters itself assumes; the viewer does the real
/// layout, so this only has to err on the wide side.
fn estimated_width(text: &str, px: f64) -> f64 {
    text.chars().count() as f64 * px * 0.58
}

/// How many characters fit into `width` pixels at `px`, by [`estimated_width`]'s measure.
/// Bold text runs wider, so callers pass a larger `px` for it.
fn chars_fitting(width: f64, px: f64) -> usize {
    (width / (px * 0.58)).floor() as usize
}

/// Font at `px` CSS pixels. plotters' SVG backend writes `font-size = size / 1.24`, so the
/// size handed to plotters is scaled up to come out as asked.
fn font(px: f64) -> FontDesc<'static> {
    (FONT_FAMILIES, px * 1.24).into_font()
}

fn colour(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Dash and gap lengths in pixels for series `index`, `None` for a solid line. Colours repeat
/// after eight series (two subscriber counts per transport make sixteen), so each further
/// round of the palette gets its own dash pattern to stay distinguishable.
fn dashes(index: usize) -> Option<(u32, u32)> {
    match (index / PALETTE.len()) % 3 {
        0 => None,
        1 => Some((7, 4)),
        _ => Some((2, 3)),
    }
}

/// The nines axis as a plotters coordinate.
///
/// plotters can pin ticks to chosen values (`with_key_points`), but not on a plain `f64`
/// range while also taking a custom label formatter, so this linear axis supplies its own
/// ticks: whole nines, plus 50% while there is room beside 0%.
#[derive(Debug, Clone)]
struct NinesAxis {
    max: f64,
    ticks: Vec<f64>,
}

impl NinesAxis {
    fn new(max: f64) -> Self {
        let whole = (0..=max.floor() as u32).map(f64::from);
        // 50% sits 0.3 nines right of 0%; past five nines the two labels would touch.
        let median = (max <= 5.0).then(|| 2f64.log10());
        let mut ticks: Vec<f64> = whole.chain(median).collect();
        ticks.sort_by(f64::total_cmp);
        Self { max, ticks }
    }
}

impl Ranged for NinesAxis {
    // Only the name of an option: the labels come from `percentile_label` via the mesh.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = if self.max > 0.0 {
            value / self.max
        } else {
            0.0
        };
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Grid lines on the labelled ticks only; minor ("light") lines would suggest a
        // linear scale between the nines.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.max
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing.

/// The input cleaned up for drawing: invalid values dropped, scales decided.
#[derive(Debug)]
struct Prepared {
    names: Vec<String>,
    /// Per series, `(nines, latency µs)` ready to plot.
    lines: Vec<Vec<(f64, f64)>>,
    /// Per series, p50 / p99 / p99.9 where they are plottable.
    bars: Vec<[Option<f64>; 3]>,
    nines_max: f64,
    latency: LatencyAxis,
}

impl Prepared {
    fn new(series: &[LatencySeries]) -> Self {
        // The axis ends one whole nine past the furthest finite percentile, so the 100% point
        // (the maximum, infinitely far out on this scale) has a place at the right edge.
        let furthest = series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|(_, us)| us.is_finite())
            .filter_map(|(p, _)| nines(*p))
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max);
        let nines_max = (furthest.floor() + 1.0).clamp(1.0, MAX_NINES);

        let lines: Vec<Vec<(f64, f64)>> = series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter_map(|(p, us)| Some((nines(*p)?.min(nines_max), plottable_us(*us)?)))
                    .collect()
            })
            .collect();
        let bars: Vec<[Option<f64>; 3]> = series
            .iter()
            .map(|s| [s.p50_us, s.p99_us, s.p999_us].map(plottable_us))
            .collect();
        let latency = LatencyAxis::new(
            lines
                .iter()
                .flatten()
                .map(|(_, us)| *us)
                .chain(bars.iter().flatten().flatten().copied())
                .chain(series.iter().filter_map(|s| plottable_us(s.max_us))),
        );
        Self {
            names: series.iter().map(|s| clean_name(&s.name)).collect(),
            lines,
            bars,
            nines_max,
            latency,
        }
    }

    fn has_lines(&self) -> bool {
        self.lines.iter().any(|line| !line.is_empty())
    }

    fn has_bars(&self) -> bool {
        self.bars.iter().flatten().any(Option::is_some)
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &ChartText,
    data: &Prepared,
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER_HEIGHT);
    let (left, right) = body.split_horizontally(LEFT_WIDTH);

    let usable = f64::from(WIDTH) - 32.0;
    header.draw(&Text::new(
        // Bold runs about a tenth wider than regular.
        clean_text(&text.title, chars_fitting(usable, 18.0 * 1.1)),
        (16, 12),
        font(18.0).style(FontStyle::Bold).color(&BLACK),
    ))?;
    header.draw(&Text::new(
        clean_text(&text.subtitle, chars_fitting(usable, 13.0)),
        (16, 38),
        font(13.0).color(&TEXT_GREY),
    ))?;

    // The two plotting areas line up only while the transport names fit across. Lining them up
    // when the names stand upright too was tried: it took a third of the percentile panel's
    // height, and its legend then had nowhere to go that did not cover a line.
    draw_percentile_panel(&left, data)?;
    draw_bar_panel(&right, data)
}

/// A panel's chart with its caption, `(left, right)` margins and the height of its x labels;
/// the latency axis' labels take the same width in both panels.
fn panel<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    (left, right): (u32, u32),
    x_label_height: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, font(15.0).style(FontStyle::Bold).color(&BLACK))
        .margin_left(left)
        .margin_right(right)
        .margin_top(6)
        .margin_bottom(10)
        .x_label_area_size(x_label_height)
        .y_label_area_size(Y_LABEL_WIDTH);
    builder
}

/// The latency axis both panels share: logarithmic, with the chosen ticks.
fn latency_axis(data: &Prepared) -> LatencyCoord {
    (data.latency.low..data.latency.high)
        .log_scale()
        .with_key_points(data.latency.ticks.clone())
}

/// The latency axis as plotters' coordinate.
type LatencyCoord = WithKeyPoints<LogCoord<f64>>;

/// The grid, axis and label styles of both panels, and their latency labels.
fn grey_mesh<'m, 'a, 'b, X, DB>(
    mesh: &'m mut MeshStyle<'a, 'b, X, LatencyCoord, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, LatencyCoord, DB>
where
    X: Ranged,
    DB: DrawingBackend,
{
    mesh.bold_line_style(GRID_GREY)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS_GREY)
        .label_style(font(12.0).color(&TEXT_GREY))
        .y_label_formatter(&latency_label_of)
}

fn latency_label_of(us: &f64) -> String {
    latency_label(*us)
}

fn draw_percentile_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &Prepared,
) -> DrawResult<DB> {
    // Room on the right for the last tick label ("99.9999%"), centred on the axis' end.
    let mut chart = panel(
        area,
        "Latency by percentile",
        (16, 32),
        PERCENTILE_LABEL_HEIGHT,
    )
    .build_cartesian_2d(NinesAxis::new(data.nines_max), latency_axis(data))?;
    grey_mesh(&mut chart.configure_mesh())
        .axis_desc_style(font(13.0).color(&BLACK))
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("publish → receive latency")
        .draw()?;

    if !data.has_lines() {
        return draw_no_data(&chart.plotting_area().strip_coord_spec());
    }
    let mut occupied = Vec::new();
    for (index, (name, line)) in data.names.iter().zip(&data.lines).enumerate() {
        let style = colour(index).stroke_width(2);
        let points = line.iter().copied();
        let drawn = match dashes(index) {
            None => chart.draw_series(LineSeries::new(points, style))?,
            Some((dash, gap)) => {
                chart.draw_series(DashedLineSeries::new(points, dash, gap, style))?
            }
        };
        drawn.label(name.as_str()).legend(move |(x, y)| {
            let swatch = vec![(x, y), (x + 18, y)];
            match dashes(index) {
                None => PathElement::new(swatch, style).into_dyn(),
                Some((dash, gap)) => DashedPathElement::new(swatch, dash, gap, style).into_dyn(),
            }
        });
        let pixels: Vec<_> = line.iter().map(|p| chart.backend_coord(p)).collect();
        for pair in pixels.windows(2) {
            sample_segment(pair[0], pair[1], &mut occupied);
        }
    }
    let legend = Legend {
        labels: data.names.iter().map(String::as_str).collect(),
        swatch: 24,
    };
    let position = legend.position(chart.plotting_area().get_pixel_range(), &occupied);
    legend.draw(&mut chart, position)
}

fn draw_bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &Prepared,
) -> DrawResult<DB> {
    let groups = data.names.len().max(1);
    let names = NameLabels::new(&data.names, area.dim_in_pixel().0);
    let mut chart = panel(
        area,
        "p50 · p99 · p99.9 by transport",
        (8, 28),
        names.height,
    )
    .build_cartesian_2d(0.0..groups as f64, latency_axis(data))?;
    grey_mesh(&mut chart.configure_mesh())
        .disable_x_mesh()
        // Keeps the axis line but not its tick labels, which would be group indices.
        .x_labels(0)
        .draw()?;

    if !data.has_bars() {
        return draw_no_data(&chart.plotting_area().strip_coord_spec());
    }

    // On a log axis a bar must start somewhere; the axis' bottom is the honest choice.
    let floor = data.latency.low;
    // The three bars take 70% of a group; the rest is the gap between groups.
    let bar = 0.7 / 3.0;
    let mut occupied = Vec::new();
    for (index, values) in data.bars.iter().enumerate() {
        let group_left = index as f64 + 0.15;
        for (slot, (value, (_, strength))) in values.iter().zip(BAR_LEVELS).enumerate() {
            let Some(value) = *value else { continue };
            let x0 = group_left + bar * slot as f64;
            let corners = [(x0, floor), (x0 + bar * 0.92, value)];
            chart.draw_series(std::iter::once(Rectangle::new(
                corners,
                colour(index).mix(strength).filled(),
            )))?;
            let top_left = chart.backend_coord(&(corners[0].0, corners[1].1));
            let bottom_right = chart.backend_coord(&(corners[1].0, corners[0].1));
            for y in (top_left.1..=bottom_right.1).step_by(4) {
                sample_segment((top_left.0, y), (bottom_right.0, y), &mut occupied);
            }
        }
    }

    // Legend entries without data: neutral swatches at the three strengths.
    for (label, strength) in BAR_LEVELS {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(label)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], BLACK.mix(strength).filled())
            });
    }
    let legend = Legend {
        labels: BAR_LEVELS.iter().map(|(label, _)| *label).collect(),
        swatch: 22,
    };
    let position = legend.position(chart.plotting_area().get_pixel_range(), &occupied);
    legend.draw(&mut chart, position)?;

    // The transport names are drawn here rather than as the axis' tick labels because plotters
    // centres rotated tick labels on the tick, which puts half of each name inside the plot.
    // `backend_coord` answers in whole-image pixels, `area` draws from its own corner.
    let (base_x, base_y) = area.get_base_pixel();
    let (_, plot_ys) = chart.plotting_area().get_pixel_range();
    let below_axis = plot_ys.end - base_y + 6;
    for (index, name) in data.names.iter().enumerate() {
        let (x, _) = chart.backend_coord(&(index as f64 + 0.5, floor));
        let style = font(NameLabels::FONT_PX).color(&BLACK);
        let style = if names.upright {
            // Reads bottom to top and ends just under the axis, like a rotated y axis title.
            style
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            style.pos(Pos::new(HPos::Center, VPos::Top))
        };
        area.draw(&Text::new(name.as_str(), (x - base_x, below_axis), style))?;
    }
    Ok(())
}

/// How the transport names under the bar groups are set.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NameLabels {
    /// Names run bottom to top instead of across.
    upright: bool,
    /// Pixels they take below the axis.
    height: u32,
}

impl NameLabels {
    const FONT_PX: f64 = 12.0;

    /// Across while every name fits under its group; otherwise all of them upright. plotters
    /// turns text by quarter turns only, and upright names cost plot height, so only then.
    fn new(names: &[String], panel_width: u32) -> Self {
        let plot_width = f64::from(panel_width) - f64::from(Y_LABEL_WIDTH) - 36.0;
        let group_width = plot_width / names.len().max(1) as f64;
        let widest = names
            .iter()
            .map(|name| estimated_width(name, Self::FONT_PX))
            .fold(0.0, f64::max);
        if widest > group_width - 6.0 {
            Self {
                upright: true,
                // Names are at most MAX_NAME_CHARS long, so this stays under 200 pixels.
                height: (widest + 14.0).max(30.0) as u32,
            }
        } else {
            Self {
                upright: false,
                height: 30,
            }
        }
    }
}

/// "no data", centred in `area`.
fn draw_no_data<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        "no data",
        (w as i32 / 2, h as i32 / 2),
        font(16.0)
            .color(&TEXT_GREY)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
}

/// A legend box, put where it hides the least data.
///
/// plotters puts a legend in a fixed corner, and every fixed corner is wrong for some data:
/// the upper left is empty while all transports are fast at the median, but a slow long-poll
/// line runs right through it. So the box's size is estimated as plotters will lay it out, and
/// a few spots are scored by how many sampled data pixels the box would cover there.
#[derive(Debug)]
struct Legend<'a> {
    labels: Vec<&'a str>,
    /// Width of the swatch column, pixels.
    swatch: u32,
}

impl Legend<'_> {
    const MARGIN: u32 = 8;
    const FONT_PX: f64 = 12.0;
    /// Gap between the box and the plot's edges.
    const INSET: i32 = 6;

    /// The spots tried, the most conventional first; a tie goes to the earlier.
    const SPOTS: [(HPos, VPos); 7] = [
        (HPos::Left, VPos::Top),
        (HPos::Right, VPos::Bottom),
        (HPos::Right, VPos::Top),
        (HPos::Left, VPos::Bottom),
        (HPos::Right, VPos::Center),
        (HPos::Center, VPos::Top),
        (HPos::Center, VPos::Bottom),
    ];

    /// The box's size in pixels, by the text measure plotters uses when it draws the box.
    fn size(&self) -> (i32, i32) {
        let style = TextStyle::from(font(Self::FONT_PX));
        let mut text = MultiLineText::<_, &str>::new((0, 0), &style);
        for label in &self.labels {
            text.push_line(*label);
        }
        // plotters' built-in measure cannot fail; if a font backend ever does, a generous
        // guess only makes the placement less choosy.
        let (w, h) = text
            .estimate_dimension()
            .unwrap_or((160, 18 * self.labels.len() as i32));
        let margins = 2 * Self::MARGIN as i32;
        (w + self.swatch as i32 + margins, h + margins)
    }

    /// The spot where the box covers the fewest `occupied` pixels (whole-image coordinates),
    /// as an offset into the plotting area whose pixel ranges are `plot`.
    fn position(
        &self,
        plot: (std::ops::Range<i32>, std::ops::Range<i32>),
        occupied: &[(i32, i32)],
    ) -> SeriesLabelPosition {
        let (w, h) = self.size();
        let (xs, ys) = plot;
        let offset = |(h_pos, v_pos): (HPos, VPos)| {
            let x = match h_pos {
                HPos::Left => Self::INSET,
                HPos::Center => (xs.end - xs.start - w) / 2,
                HPos::Right => xs.end - xs.start - w - Self::INSET,
            };
            let y = match v_pos {
                VPos::Top => Self::INSET,
                VPos::Center => (ys.end - ys.start - h) / 2,
                VPos::Bottom => ys.end - ys.start - h - Self::INSET,
            };
            (x, y)
        };
        // Counted with a few pixels to spare, so a line grazing the border counts too.
        let covered = |(x, y): (i32, i32)| {
            let (left, top) = (xs.start + x - 4, ys.start + y - 4);
            let (right, bottom) = (left + w + 8, top + h + 8);
            occupied
                .iter()
                .filter(|(px, py)| (left..=right).contains(px) && (top..=bottom).contains(py))
                .count()
        };
        let mut best = offset(Self::SPOTS[0]);
        let mut best_covered = covered(best);
        for spot in &Self::SPOTS[1..] {
            if best_covered == 0 {
                break;
            }
            let here = offset(*spot);
            let here_covered = covered(here);
            if here_covered < best_covered {
                (best, best_covered) = (here, here_covered);
            }
        }
        SeriesLabelPosition::Coordinate(best.0, best.1)
    }

    fn draw<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
        &self,
        chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
        position: SeriesLabelPosition,
    ) -> DrawResult<DB> {
        chart
            .configure_series_labels()
            .position(position)
            .label_font(font(Self::FONT_PX).color(&BLACK))
            // Slightly see-through: if every spot covers something, it still shows.
            .background_style(WHITE.mix(0.85))
            .border_style(GRID_GREY)
            .margin(Self::MARGIN)
            .legend_area_size(self.swatch)
            .draw()
    }
}

/// Adds a point every few pixels along a segment, for [`Legend::position`] to count.
fn sample_segment(from: (i32, i32), to: (i32, i32), out: &mut Vec<(i32, i32)>) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let steps = (dx.abs().max(dy.abs()) / 3).max(1);
    out.extend((0..=steps).map(|i| (from.0 + dx * i / steps, from.1 + dy * i / steps)));
}

/// A minimal SVG carrying one message, for when plotters fails; written by hand because the
/// point is not to depend on the thing that just failed.
fn fallback_svg(message: &str) -> String {
    let escaped: String = clean_text(message, 200)
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            other => other.to_string(),
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"20\" y=\"40\" font-family=\"{FONT_FAMILIES}\" font-size=\"16\">{escaped}</text>\
         </svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible HdrHistogram-style series: points at 0%, 50%, 75%, 87.5%… up to 100%.
    fn series(name: &str, p50_us: f64, tail_us: f64) -> LatencySeries {
        let mut points = Vec::new();
        let mut remaining: f64 = 1.0;
        while remaining > 1e-5 {
            let percentile = 100.0 * (1.0 - remaining);
            let x = nines(percentile).unwrap_or(0.0);
            points.push((percentile, p50_us * (1.0 + x * x * tail_us / p50_us / 25.0)));
            remaining /= 2.0;
        }
        points.push((100.0, p50_us + tail_us));
        LatencySeries {
            name: name.to_owned(),
            points,
            p50_us,
            p99_us: p50_us * 3.0,
            p999_us: p50_us + tail_us / 2.0,
            max_us: p50_us + tail_us,
        }
    }

    fn eight_transports() -> Vec<LatencySeries> {
        [
            ("ws", 300.0, 6_000.0),
            ("ws-deflate", 420.0, 9_000.0),
            ("sse", 350.0, 8_000.0),
            ("sse-h2", 500.0, 15_000.0),
            ("longpoll", 8_000.0, 80_000.0),
            ("wt-stream", 600.0, 20_000.0),
            ("wt-stream-per-event", 900.0, 40_000.0),
            ("wt-datagram", 450.0, 5_000.0),
        ]
        .into_iter()
        .map(|(name, p50, tail)| series(name, p50, tail))
        .collect()
    }

    fn text() -> ChartText {
        ChartText {
            title: "streamgate compare: publish → receive latency".to_owned(),
            subtitle: "streamgate compare --events 10000 · 2 cores".to_owned(),
        }
    }

    /// Parses the SVG as XML (failing the test if it is not) and returns all its text.
    fn svg_text(svg: &str) -> Vec<String> {
        let doc = match roxmltree::Document::parse(svg) {
            Ok(doc) => doc,
            Err(err) => panic!("not well-formed XML: {err}\n{svg}"),
        };
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|node| node.has_tag_name("text"))
            .filter_map(|node| node.text())
            .map(|text| text.trim().to_owned())
            .collect()
    }

    #[test]
    fn svg_is_xml_and_names_every_series() {
        let all = eight_transports();
        let svg = latency_chart_svg(&text(), &all);
        let texts = svg_text(&svg);
        for s in &all {
            // Once in the legend, once under its bars.
            let shown = texts.iter().filter(|t| **t == s.name).count();
            assert_eq!(shown, 2, "{} is shown {shown} times", s.name);
        }
        assert!(texts.iter().any(|t| t == "99.9%"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "1 ms"), "{texts:?}");
        assert!(!texts.iter().any(|t| t == "no data"));
    }

    #[test]
    fn empty_input_draws_empty_chart_saying_no_data() {
        let texts = svg_text(&latency_chart_svg(&ChartText::default(), &[]));
        assert_eq!(texts.iter().filter(|t| *t == "no data").count(), 2);
    }

    #[test]
    fn rough_input_is_drawn_without_panicking() {
        let rough = vec![
            LatencySeries {
                name: "no points".to_owned(),
                ..LatencySeries::default()
            },
            LatencySeries {
                name: "zeros".to_owned(),
                points: vec![(0.0, 0.0), (50.0, 0.0), (100.0, 0.0)],
                ..LatencySeries::default()
            },
            LatencySeries {
                name: "non-finite".to_owned(),
                points: vec![
                    (f64::NAN, 5.0),
                    (10.0, f64::NAN),
                    (20.0, f64::INFINITY),
                    (-5.0, 3.0),
                    (f64::INFINITY, 7.0),
                    (150.0, f64::MAX),
                ],
                p50_us: f64::NAN,
                p99_us: f64::NEG_INFINITY,
                p999_us: -3.0,
                max_us: f64::INFINITY,
            },
        ];
        let svg = latency_chart_svg(&text(), &rough);
        let texts = svg_text(&svg);
        for s in &rough {
            assert!(texts.contains(&s.name), "{} missing", s.name);
        }
        // Nothing non-finite reached the drawing.
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }

    #[test]
    fn odd_names_stay_well_formed() {
        let mut odd = series("<ws & \"sse\">", 300.0, 2_000.0);
        odd.name.push('\u{1}');
        let long = series(&format!("{} ×1000", "x".repeat(100)), 300.0, 2_000.0);
        let title = ChartText {
            title: "a\u{0}b".to_owned(),
            subtitle: "y".repeat(1_000),
        };
        let texts = svg_text(&latency_chart_svg(&title, &[odd, long]));
        assert!(texts.iter().any(|t| t == "<ws & \"sse\">"), "{texts:?}");
        let shortened = texts.iter().find(|t| t.starts_with("xxx"));
        assert_eq!(shortened.map(|t| t.chars().count()), Some(MAX_NAME_CHARS));
        // Shortened in the middle, keeping the end that tells related series apart.
        assert!(
            shortened.is_some_and(|t| t.contains('…') && t.ends_with(" ×1000")),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "a b"), "{texts:?}");
    }

    #[test]
    fn nines_scale_gives_one_unit_per_nine() {
        let close = |p: f64, expected: f64| {
            let x = nines(p).unwrap_or(f64::NAN);
            assert!(
                (x - expected).abs() < 1e-9,
                "nines({p}) = {x}, not {expected}"
            );
        };
        close(0.0, 0.0);
        close(90.0, 1.0);
        close(99.0, 2.0);
        close(99.9, 3.0);
        close(99.99, 4.0);
        assert_eq!(nines(100.0), Some(f64::INFINITY));
        assert_eq!(nines(120.0), Some(f64::INFINITY));
        assert_eq!(nines(-1.0), None);
        assert_eq!(nines(f64::NAN), None);
        assert!((percentile_at(3.0) - 99.9).abs() < 1e-9);
    }

    #[test]
    fn the_maximum_sits_at_the_right_edge() {
        let data = Prepared::new(&[series("ws", 300.0, 6_000.0)]);
        // The series' last finite point is at 99.999% (about 4.8 nines).
        assert_eq!(data.nines_max, 5.0);
        assert_eq!(data.lines[0].last().map(|p| p.0), Some(5.0));
    }

    #[test]
    fn tick_labels_read_naturally() {
        let labels: Vec<String> = [0.0, 2f64.log10(), 1.0, 2.0, 3.0, 4.0, 6.0]
            .into_iter()
            .map(percentile_label)
            .collect();
        assert_eq!(
            labels,
            ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.9999%"]
        );
        let labels: Vec<String> = [1.0, 250.0, 1_000.0, 2_500.0, 20_000.0, 1.5e6]
            .into_iter()
            .map(latency_label)
            .collect();
        assert_eq!(
            labels,
            ["1 µs", "250 µs", "1 ms", "2.5 ms", "20 ms", "1.5 s"]
        );
    }

    #[test]
    fn latency_axis_rounds_out_to_one_two_five() {
        let axis = LatencyAxis::new([300.0, 80_000.0].into_iter());
        assert_eq!((axis.low, axis.high), (200.0, 100_000.0));
        assert_eq!(axis.ticks.first(), Some(&200.0));
        assert_eq!(axis.ticks.last(), Some(&100_000.0));
        assert!(axis.ticks.contains(&1_000.0));

        let one_value = LatencyAxis::new([1_000.0].into_iter());
        assert!(one_value.low < one_value.high);

        let narrow = LatencyAxis::new([420.0, 499.0].into_iter());
        assert_eq!(narrow.ticks, [200.0, 300.0, 400.0, 500.0]);

        let wide = LatencyAxis::new([FLOOR_US, CEILING_US].into_iter());
        assert!(wide.ticks.len() <= LatencyAxis::MAX_TICKS, "{wide:?}");
        assert!(wide.high.is_finite());
    }

    #[cfg(feature = "png")]
    #[test]
    fn png_has_signature_and_its_text_is_rendered() {
        let png = match latency_chart_png(&text(), &eight_transports()) {
            Ok(png) => png,
            Err(err) => panic!("{err:#}"),
        };
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

        // usvg turns text it can set into outlines and drops text it cannot, so counting the
        // outlined text shows whether the machine's fonts were found.
        let tree = match png::parse(&latency_chart_svg(&text(), &eight_transports())) {
            Ok(tree) => tree,
            Err(err) => panic!("{err:#}"),
        };
        fn outlined(group: &resvg::usvg::Group) -> usize {
            group
                .children()
                .iter()
                .map(|node| match node {
                    resvg::usvg::Node::Group(group) => outlined(group),
                    resvg::usvg::Node::Text(text) => {
                        usize::from(!text.flattened().children().is_empty())
                    }
                    resvg::usvg::Node::Path(_) | resvg::usvg::Node::Image(_) => 0,
                })
                .sum()
        }
        // Title, subtitle, captions, ticks, legend and names: well over forty.
        let count = outlined(tree.root());
        assert!(count > 40, "only {count} text elements rendered");
    }

    #[cfg(not(feature = "png"))]
    #[test]
    fn png_without_the_feature_is_an_error_not_a_panic() {
        assert!(latency_chart_png(&text(), &eight_transports()).is_err());
    }

    #[cfg(feature = "png")]
    #[test]
    fn png_of_nothing_works() {
        let png = latency_chart_png(&ChartText::default(), &[]);
        assert!(png.is_ok_and(|png| png.starts_with(b"\x89PNG")));
    }
}
