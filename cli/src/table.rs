//! Plain-text tables for people (`--json` is for scripts).

use serde_json::Value;

/// A table: a header row and data rows, printed with aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Row>,
}

/// A data row, or a free-text line that does not widen the columns.
enum Row {
    Cells(Vec<String>),
    Note(String),
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(Row::Cells(cells));
    }

    /// Adds a line of free text (a marker such as an error), printed as is between the rows.
    pub fn note(&mut self, text: String) {
        self.rows.push(Row::Note(text));
    }

    /// The table as text, one line per row.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            let Row::Cells(row) = row else { continue };
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i + 1 == cells.len() {
                    out.push_str(c);
                } else {
                    out.push_str(&format!("{c:<w$}  "));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&self.header);
        out.push('\n');
        for row in &self.rows {
            match row {
                Row::Cells(cells) => out.push_str(&line(cells)),
                Row::Note(text) => out.push_str(text),
            }
            out.push('\n');
        }
        out
    }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Microseconds as milliseconds with one decimal.
pub fn ms(us: Option<&Value>) -> String {
    us.and_then(Value::as_f64)
        .map_or_else(|| "-".into(), |u| format!("{:.1}", u / 1000.0))
}

/// The strings of a JSON array (anything else in it, or a value that is no array, gives none).
pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// A server's request figures from `GET /stats` as the cells under REQUESTS, ERRORS, P50 MS,
/// P90 MS, P99 MS and MAX MS (`mcpctl stats`, alone or for every member).
pub fn request_cells(server: &Value) -> [String; 6] {
    let q = &server["request"];
    [
        cell(server.get("requests")),
        cell(server.get("errors")),
        ms(q.get("p50")),
        ms(q.get("p90")),
        ms(q.get("p99")),
        ms(q.get("max")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["alpha".into(), "up".into()]);
        t.row(vec!["b".into(), "down".into()]);
        assert_eq!(t.render(), "NAME   STATUS\nalpha  up\nb      down\n");
    }

    #[test]
    fn notes_do_not_widen_columns() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["a".into(), "up".into()]);
        t.note("  a long marker line".into());
        assert_eq!(t.render(), "NAME  STATUS\na     up\n  a long marker line\n");
    }

    #[test]
    fn strings_keeps_the_strings_of_an_array_and_nothing_else() {
        let v = serde_json::json!({"a": ["x", 1, "y", null], "b": "x"});
        assert_eq!(strings(&v["a"]), ["x", "y"]);
        assert!(strings(&v["b"]).is_empty());
        assert!(strings(&v["missing"]).is_empty());
    }
}
