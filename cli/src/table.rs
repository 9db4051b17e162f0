//! Aligned text tables: columns as wide as their widest cell, two spaces
//! apart, numbers right-aligned, no trailing spaces; and fitted to a
//! terminal's width: text columns shrink (cut in the middle, where names
//! carry least), then the least important columns go, and the room left
//! goes back to the shrunk ones. The agent's live table uses this too.

/// How wide a table may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Every column, every cell in full (`-o wide`, or not a terminal).
    All,
    /// At most this many characters per line, as far as the columns that
    /// are never dropped allow.
    Fit(usize),
}

impl Width {
    /// Fit this terminal (stdout, else `$COLUMNS`); `All` when there is no
    /// width to fit (a pipe, a file).
    pub fn of_terminal() -> Self {
        terminal_columns().map_or(Self::All, Self::Fit)
    }
}

/// The width of the terminal on stdout, else `$COLUMNS`.
pub fn terminal_columns() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct we pass;
    // on a descriptor that is not a terminal it fails and writes nothing.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return Some(usize::from(ws.ws_col));
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c| c > 0)
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    /// Numbers are right-aligned so their digits line up.
    pub right: bool,
    /// 1 is never dropped; when fitting, the highest number goes first
    /// (the rightmost of equals).
    pub priority: u8,
    /// A text column shrinks to this when fitting; numbers never shrink.
    pub min: usize,
}

pub const fn left(title: &'static str) -> Column {
    Column {
        title,
        right: false,
        priority: 1,
        min: usize::MAX,
    }
}

pub const fn right(title: &'static str) -> Column {
    Column {
        title,
        right: true,
        priority: 1,
        min: usize::MAX,
    }
}

impl Column {
    /// Dropped before columns of a lower number when the width is short.
    pub const fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Cut (in the middle) down to `min` characters when the width is short.
    pub const fn shrinks_to(mut self, min: usize) -> Self {
        self.min = min;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

const GAP: usize = 2;

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn line_width(shown: &[(usize, usize)]) -> usize {
    shown.iter().map(|(_, w)| w).sum::<usize>() + GAP * shown.len().saturating_sub(1)
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

    /// The header and the rows, every column in full, each line ending in
    /// '\n'.
    pub fn render(&self) -> String {
        self.render_in(Width::All)
    }

    /// The header and the rows, fitted to `width`.
    pub fn render_in(&self, width: Width) -> String {
        let natural: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .map(|r| chars(&r[i]))
                    .fold(chars(c.title), usize::max)
            })
            .collect();
        let shown = match width {
            Width::All => natural.into_iter().enumerate().collect(),
            Width::Fit(max) => self.fit(&natural, max),
        };
        let header: Vec<String> = self.columns.iter().map(|c| c.title.to_string()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (n, &(i, w)) in shown.iter().enumerate() {
                if n > 0 {
                    line.push_str(&" ".repeat(GAP));
                }
                let cell = crate::format::truncate(&row[i], w);
                let pad = w.saturating_sub(chars(&cell));
                if self.columns[i].right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(&cell);
                } else {
                    line.push_str(&cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// (column, width) of the columns shown within `max`: every text
    /// column shrunk, the least important dropped until the line fits,
    /// those that fit in what is left taken back, then the room left
    /// handed to the shrunk columns, left to right.
    fn fit(&self, natural: &[usize], max: usize) -> Vec<(usize, usize)> {
        let cols = &self.columns;
        let mut shown: Vec<(usize, usize)> = natural
            .iter()
            .enumerate()
            .map(|(i, &n)| (i, n.min(cols[i].min)))
            .collect();
        let mut dropped = Vec::new();
        while line_width(&shown) > max {
            // max_by_key keeps the last of equals: the rightmost.
            let Some(k) = (0..shown.len())
                .filter(|&k| cols[shown[k].0].priority > 1)
                .max_by_key(|&k| cols[shown[k].0].priority)
            else {
                break;
            };
            dropped.push(shown.remove(k));
        }
        // A dropped column that fits in what is left comes back (the most
        // important first), before the shrunk ones grow into it.
        dropped.sort_by_key(|&(i, _)| (cols[i].priority, i));
        for (i, w) in dropped {
            if line_width(&shown) + GAP + w <= max {
                let at = shown.partition_point(|&(j, _)| j < i);
                shown.insert(at, (i, w));
            }
        }
        let mut room = max.saturating_sub(line_width(&shown));
        for (i, w) in shown.iter_mut() {
            let more = (natural[*i] - *w).min(room);
            *w += more;
            room -= more;
        }
        shown
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

    fn table() -> Table {
        let mut t = Table::new(vec![
            left("NAME").shrinks_to(8),
            right("A"),
            right("B").priority(3),
            left("NOTE").shrinks_to(4).priority(2),
        ]);
        t.push(
            ["a-rather-long-workload-name", "1", "22", "some note here"]
                .map(String::from)
                .to_vec(),
        );
        t
    }

    #[test]
    fn fits_by_shrinking_then_dropping_by_priority_then_giving_room_back() {
        let t = table();
        // In full: 27+1+2+14 and 3 gaps = 50; all shrunk: 8+1+2+4+6 = 21.
        assert_eq!(t.render_in(Width::Fit(50)), t.render());
        assert_eq!(
            t.render_in(Width::Fit(30)),
            "NAME               A   B  NOTE\n\
             a-rather…oad-name  1  22  so…e\n",
            "all fit shrunk; what is left goes to NAME first"
        );
        assert_eq!(
            t.render_in(Width::Fit(16)),
            "NAME       A   B\na-ra…name  1  22\n",
            "B, then NOTE dropped; then B fits again"
        );
        assert_eq!(
            t.render_in(Width::Fit(5)),
            "NAME      A\na-ra…ame  1\n",
            "priority 1 is never dropped, even past the width"
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
