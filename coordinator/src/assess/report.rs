//! The assessment as one self-contained HTML page (`assess --html FILE`): the summary, the
//! findings, charts drawn as inline SVG (the type mix of each attribute, the item size histogram,
//! the entities and their counts) and the draft schema per target as tables. No script, no font,
//! no image, no style sheet is loaded: everything is in the page, and its Content-Security-Policy
//! (`default-src 'none'`) tells the browser to fetch nothing even if a value held a URL. Every
//! text from the export is escaped.

use std::fmt::Write as _;

use super::draft::{Draft, DraftTarget};
use super::Assessment;

/// Attributes drawn in the type-mix chart (all are in the JSON).
const TYPE_CHART_ATTRIBUTES: usize = 40;
/// Entities drawn in the entity chart.
const ENTITY_CHART_ENTITIES: usize = 30;
/// The histogram's and the entity chart's bar colours (the tests look for them on the screen).
pub const SIZE_BAR_COLOUR: &str = "#2a6fdb";
/// See [`SIZE_BAR_COLOUR`].
pub const ENTITY_BAR_COLOUR: &str = "#1b9e77";
/// Width of the charts' plotting area, in pixels.
const PLOT_WIDTH: f64 = 640.0;

/// The colour of each DynamoDB type in the type-mix chart.
pub fn type_colour(ddb_type: &str) -> &'static str {
    match ddb_type {
        "S" => "#4e79a7",
        "N" => "#f28e2b",
        "B" => "#e15759",
        "BOOL" => "#76b7b2",
        "NULL" => "#bab0ac",
        "M" => "#59a14f",
        "L" => "#edc948",
        "SS" => "#b07aa1",
        "NS" => "#ff9da7",
        "BS" => "#9c755f",
        _ => "#555555",
    }
}

const TYPES: [&str; 10] = ["S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"];

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for element text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count as `512 B`, `4 KiB`, `2 MiB`.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d8dce3;padding-bottom:4px}\
h3{font-size:15px;margin:18px 0 6px}table{border-collapse:collapse;margin:8px 0}\
td,th{border:1px solid #d8dce3;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f2f4f7}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#687385}code,pre{font:12px ui-monospace,monospace}\
pre{background:#f6f8fa;padding:10px;overflow-x:auto}.finding{border-left:4px solid #e15759;padding:4px 12px;margin:10px 0;background:#fdf3f3}\
.ok{border-left:4px solid #59a14f;padding:4px 12px;background:#f2f9f1}svg text{font:12px system-ui,sans-serif;fill:#1d2330}\
.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}";

impl Assessment {
    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        out.push_str(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        );
        let _ = write!(
            out,
            "<title>Ferry assessment: {}</title><style>{STYLE}</style></head><body>",
            escape(&self.export)
        );
        self.html_summary(&mut out);
        self.html_findings(&mut out);
        self.html_entities(&mut out);
        self.html_sizes(&mut out);
        self.html_types(&mut out);
        for draft in &self.drafts {
            html_draft(&mut out, draft);
        }
        out.push_str("</body></html>\n");
        out
    }

    fn html_summary(&self, out: &mut String) {
        let _ = write!(
            out,
            "<h1>Ferry assessment</h1><p class=\"muted\"><code>{}</code></p><table id=\"summary\">",
            escape(&self.export)
        );
        let mut row = |name: &str, value: String| {
            let _ = write!(out, "<tr><th>{name}</th><td>{value}</td></tr>");
        };
        row(
            "Read",
            format!(
                "{} items ({}) from {} of {} data files in {:.1} s{}",
                thousands(self.items),
                escape(&self.mode),
                self.files_read,
                self.files,
                self.seconds,
                self.manifest_items
                    .map(|n| format!("; the manifest says {}", thousands(n)))
                    .unwrap_or_default()
            ),
        );
        if self.bad_lines > 0 {
            row(
                "Damaged lines",
                format!("{} (see the findings)", thousands(self.bad_lines)),
            );
        }
        row(
            "Item size",
            format!(
                "{:.0} bytes on average; largest {}",
                self.sizes.mean_bytes,
                self.sizes
                    .largest
                    .first()
                    .map(|l| format!(
                        "{} bytes (<code>{}</code>, {})",
                        thousands(l.bytes),
                        escape(&l.key),
                        escape(&l.location)
                    ))
                    .unwrap_or_else(|| "-".into())
            ),
        );
        match &self.key {
            Some(key) => row(
                "Key",
                format!(
                    "<code>{}</code>{}: {} duplicate{} among {} keys checked ({:.0}% of the key space); longest {} bytes; {} items without it",
                    escape(&key.attributes.join(", ")),
                    if key.proposed { " (proposed: pass --key to choose)" } else { "" },
                    thousands(key.duplicates),
                    if key.duplicates == 1 { "" } else { "s" },
                    thousands(key.checked),
                    key.share_checked * 100.0,
                    thousands(key.longest_bytes),
                    thousands(key.keyless)
                ),
            ),
            None => row("Key", "none found unique in the sample: pass --key".into()),
        }
        row("Attributes", thousands(self.attributes.len() as u64));
        row("Entities", thousands(self.entities.len() as u64));
        out.push_str("</table>");
    }

    fn html_findings(&self, out: &mut String) {
        out.push_str("<h2>Findings</h2>");
        if self.findings.is_empty() {
            out.push_str("<p class=\"ok\">None: nothing here a run would reject or spill.</p>");
        }
        for f in &self.findings {
            let _ = write!(
                out,
                "<div class=\"finding\" data-kind=\"{}\"><p><b>{}</b> ({}): {}</p>",
                escape(&f.kind),
                escape(&f.kind),
                thousands(f.count),
                escape(&f.what)
            );
            if !f.examples.is_empty() {
                out.push_str("<ul>");
                for example in &f.examples {
                    let _ = write!(out, "<li><code>{}</code></li>", escape(example));
                }
                out.push_str("</ul>");
            }
            let _ = write!(out, "<p>What to do: {}</p></div>", escape(&f.advice));
        }
    }

    fn html_entities(&self, out: &mut String) {
        if self.entities.is_empty() {
            return;
        }
        out.push_str("<h2>Entities</h2><p class=\"muted\">Items grouped by the patterns of their key values.</p>");
        let shown: Vec<_> = self.entities.iter().take(ENTITY_CHART_ENTITIES).collect();
        let most = shown.iter().map(|e| e.items).max().unwrap_or(1).max(1);
        let label_width = 200.0;
        let row_height = 22.0;
        let height = row_height * shown.len() as f64 + 8.0;
        let _ = write!(
            out,
            "<svg id=\"entity-chart\" role=\"img\" aria-label=\"items per entity\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
            label_width + PLOT_WIDTH + 120.0,
            label_width + PLOT_WIDTH + 120.0
        );
        for (i, e) in shown.iter().enumerate() {
            let y = 4.0 + row_height * i as f64;
            let width = (PLOT_WIDTH * e.items as f64 / most as f64).max(1.0).round();
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect class=\"bar\" x=\"{label_width}\" y=\"{y}\" width=\"{width}\" height=\"{}\" fill=\"{ENTITY_BAR_COLOUR}\" data-items=\"{}\"><title>{}: {} items</title></rect><text x=\"{}\" y=\"{}\">{}</text>",
                label_width - 8.0,
                y + 14.0,
                escape(&e.name),
                row_height - 6.0,
                e.items,
                escape(&e.name),
                thousands(e.items),
                label_width + width + 6.0,
                y + 14.0,
                thousands(e.items)
            );
        }
        out.push_str("</svg>");
        out.push_str("<table id=\"entities\"><tr><th>Entity</th><th>Items</th><th>Share</th><th>Key patterns</th><th>Attributes (share of its items)</th><th>Example key</th></tr>");
        for e in &self.entities {
            let attributes: Vec<String> = e
                .attributes
                .iter()
                .map(|(a, share)| format!("{} {:.0}%", escape(a), share * 100.0))
                .collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}%</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&e.name),
                thousands(e.items),
                e.share * 100.0,
                escape(&e.key_patterns.join(" / ")),
                attributes.join(", "),
                escape(&e.example.join(" / "))
            );
        }
        out.push_str("</table>");
        if !self.foreign_keys.is_empty() {
            out.push_str("<h3>References (foreign-key candidates)</h3><table id=\"references\"><tr><th>Attribute</th><th>In</th><th>References</th><th>Pattern</th><th>Share of its values</th></tr>");
            for fk in &self.foreign_keys {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{:.0}%</td></tr>",
                    escape(&fk.attribute),
                    escape(&fk.in_entities.join(", ")),
                    escape(&fk.references),
                    escape(&fk.pattern),
                    fk.share * 100.0
                );
            }
            out.push_str("</table>");
        }
    }

    fn html_sizes(&self, out: &mut String) {
        out.push_str("<h2>Item sizes</h2><p class=\"muted\">Items per size (bytes of the export line), buckets doubling.</p>");
        let buckets = &self.sizes.buckets;
        if buckets.is_empty() {
            out.push_str("<p>No items.</p>");
            return;
        }
        let most = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
        // Every bucket from the smallest item's to the largest's, empty ones too: a gap shows.
        let first = buckets[0].0.trailing_zeros();
        let last = buckets[buckets.len() - 1].0.trailing_zeros();
        let slots: Vec<(u64, u64)> = (first..=last)
            .map(|bit| {
                let upper = 1u64 << bit;
                let items = buckets.iter().find(|b| b.0 == upper).map_or(0, |b| b.1);
                (upper, items)
            })
            .collect();
        let top = 24.0;
        let plot_height = 200.0;
        let slot = (PLOT_WIDTH / slots.len() as f64).min(60.0);
        let width = 60.0 + slot * slots.len() as f64 + 20.0;
        let height = top + plot_height + 50.0;
        let base = top + plot_height;
        let _ = write!(
            out,
            "<svg id=\"size-chart\" role=\"img\" aria-label=\"item size histogram\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><line x1=\"56\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#687385\"/>",
            width - 10.0
        );
        // Narrow slots (a wide size range) label every other bucket, so labels never overlap.
        let label_every = if slot < 52.0 { 2 } else { 1 };
        for (i, (upper, items)) in slots.iter().enumerate() {
            let x = 60.0 + slot * i as f64;
            let middle = x + slot / 2.0 - 2.0;
            if *items > 0 {
                let bar = (plot_height * *items as f64 / most as f64).max(1.0).round();
                let _ = write!(
                    out,
                    "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{bar}\" fill=\"{SIZE_BAR_COLOUR}\" data-items=\"{items}\"><title>under {}: {} items</title></rect><text x=\"{middle}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                    base - bar,
                    (slot - 4.0).max(1.0),
                    bytes(*upper),
                    thousands(*items),
                    base - bar - 4.0,
                    compact(*items),
                );
            }
            if i % label_every == 0 {
                let _ = write!(
                    out,
                    "<text x=\"{middle}\" y=\"{}\" text-anchor=\"middle\">&lt;{}</text>",
                    base + 18.0,
                    bytes(*upper)
                );
            }
        }
        out.push_str("</svg>");
        if !self.sizes.largest.is_empty() {
            out.push_str("<h3>The largest items</h3><table id=\"largest\"><tr><th>Bytes</th><th>Key</th><th>Where</th></tr>");
            for l in &self.sizes.largest {
                let _ = write!(
                    out,
                    "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
                    thousands(l.bytes),
                    escape(&l.key),
                    escape(&l.location)
                );
            }
            out.push_str("</table>");
        }
    }

    fn html_types(&self, out: &mut String) {
        out.push_str("<h2>Attributes</h2><p class=\"muted\">Each bar is the share of items holding the attribute, split by the DynamoDB type of its value.</p><p class=\"legend\">");
        for t in TYPES {
            let _ = write!(
                out,
                "<span><i style=\"background:{}\"></i>{t}</span>",
                type_colour(t)
            );
        }
        out.push_str("</p>");
        let shown: Vec<_> = self.attributes.iter().take(TYPE_CHART_ATTRIBUTES).collect();
        let label_width = 220.0;
        let row_height = 20.0;
        let height = row_height * shown.len() as f64 + 8.0;
        let items = self.items.max(1) as f64;
        let _ = write!(
            out,
            "<svg id=\"type-chart\" role=\"img\" aria-label=\"type mix per attribute\" width=\"{0}\" height=\"{height}\" viewBox=\"0 0 {0} {height}\">",
            label_width + PLOT_WIDTH + 80.0
        );
        for (i, a) in shown.iter().enumerate() {
            let y = 4.0 + row_height * i as f64;
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                label_width - 8.0,
                y + 13.0,
                escape(&a.name)
            );
            let mut x = label_width;
            for (t, n) in &a.types {
                let width = PLOT_WIDTH * *n as f64 / items;
                let _ = write!(
                    out,
                    "<rect class=\"segment\" x=\"{x:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\" data-type=\"{}\" data-items=\"{n}\"><title>{}: {} {} values</title></rect>",
                    width.max(1.0),
                    row_height - 5.0,
                    type_colour(t),
                    escape(t),
                    escape(&a.name),
                    thousands(*n),
                    escape(t)
                );
                x += width;
            }
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\">{:.1}%</text>",
                x.max(label_width + 1.0) + 6.0,
                y + 13.0,
                a.presence * 100.0
            );
        }
        out.push_str("</svg>");
        out.push_str("<table id=\"attributes\"><tr><th>Attribute</th><th>Present</th><th>Types</th><th>Distinct (est.)</th><th>Details</th></tr>");
        for a in &self.attributes {
            let types: Vec<String> = a
                .types
                .iter()
                .map(|(t, n)| format!("{} {}", escape(t), thousands(*n)))
                .collect();
            let detail: Vec<String> = a.details().iter().map(|d| escape(d)).collect();
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td class=\"n\">{:.2}%</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&a.name),
                a.presence * 100.0,
                types.join(", "),
                thousands(a.distinct),
                detail.join("; ")
            );
        }
        out.push_str("</table>");
    }
}

/// `1234567` as `1.2M`, for a bar's label.
fn compact(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn html_draft(out: &mut String, draft: &Draft) {
    let target = match draft.target {
        DraftTarget::Postgres => "PostgreSQL",
        DraftTarget::Heliosdb => "HeliosDB",
    };
    let id = match draft.target {
        DraftTarget::Postgres => "postgres",
        DraftTarget::Heliosdb => "heliosdb",
    };
    let _ = write!(
        out,
        "<h2>Draft schema for {target}</h2><p class=\"muted\">One table per routing rule; <code>assess --draft DIR</code> writes the config and DDL below. Items no rule matches go to <code>{}</code>.</p><div id=\"draft-{id}\">",
        super::draft::CATCH_ALL
    );
    for table in &draft.tables {
        let _ = write!(
            out,
            "<h3><code>{}</code> <span class=\"muted\">{}: {} items</span></h3><table class=\"draft-table\"><tr><th>Column</th><th>Type</th><th>From</th></tr>",
            escape(&table.name),
            escape(&table.entities.join(", ")),
            thousands(table.items)
        );
        for c in &table.columns {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                escape(&c.name),
                escape(&c.type_name),
                escape(&c.from)
            );
        }
        let _ = write!(
            out,
            "<tr><td><code>extra</code></td><td><code>jsonb</code></td><td class=\"muted\">every other attribute</td></tr></table>"
        );
    }
    out.push_str("</div>");
    if !draft.notes.is_empty() {
        out.push_str("<h3>Notes</h3><ul>");
        for note in &draft.notes {
            let _ = write!(out, "<li>{}</li>", escape(note));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<details><summary>Config (TOML)</summary><pre>{}</pre></details><details><summary>DDL</summary><pre>{}</pre></details>",
        escape(&draft.config),
        escape(&draft.ddl)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_export_is_escaped() {
        assert_eq!(
            escape("<img src='x' onerror=\"y\">&"),
            "&lt;img src=&#39;x&#39; onerror=&quot;y&quot;&gt;&amp;"
        );
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(3_000_000), "3,000,000");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(1 << 21), "2 MiB");
        assert_eq!(compact(12_345), "12k");
    }
}
