//! Aligned text tables: columns as wide as their widest cell, two spaces
//! apart, numbers right-aligned, no trailing spaces.

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    /// Numbers are right-aligned so their digits line up.
    pub right: bool,
}

pub const fn left(title: &'static str) -> Column {
    Column {
        title,
        right: false,
    }
}

pub const fn right(title: &'static str) -> Column {
    Column { title, right: true }
}

#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Self {
        Self {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped. Cells
    /// are escaped here (`sockeye_proto::text::escape`), before the widths
    /// are measured, so hostile text stays inert and aligned.
    pub fn push(&mut self, row: Vec<String>) {
        let mut row: Vec<String> = row
            .into_iter()
            .map(|c| match sockeye_proto::text::escape(&c) {
                std::borrow::Cow::Borrowed(_) => c,
                std::borrow::Cow::Owned(e) => e,
            })
            .collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header and the rows, each line ending in '\n'.
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| width(c.title)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let header: Vec<String> = self.columns.iter().map(|c| c.title.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, col)) in row.iter().zip(&self.columns).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(width(cell));
                if col.right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_by_character_not_byte() {
        let mut t = Table::new(vec![left("NAME"), right("P50"), left("NOTE")]);
        t.push(vec!["a".into(), "850µs".into(), "x".into()]);
        t.push(vec!["longer-name".into(), "1.02s".into(), String::new()]);
        t.push(vec!["b".into()]);
        assert_eq!(
            t.render(),
            "NAME           P50  NOTE\n\
             a            850µs  x\n\
             longer-name  1.02s\n\
             b\n"
        );
    }

    #[test]
    fn hostile_cells_are_escaped_before_they_are_measured() {
        let mut t = Table::new(vec![left("COMM"), left("X")]);
        t.push(vec!["a\x1b[2J".into(), "1".into()]);
        t.push(vec!["bb".into(), "2".into()]);
        assert_eq!(t.render(), "COMM      X\na\\x1b[2J  1\nbb        2\n");
    }
}
