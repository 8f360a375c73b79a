//! The writer's prepared statements, kept for the connection's life.
//!
//! Why not `Connection::prepare_cached`: its cache hashes the whole SQL text
//! on every call, which was about 6% of the writer thread's cpu at 130,000
//! tasks/s (`perf`). Every statement the writer runs is a `&'static str`, so
//! its address names it: a lookup is a short scan comparing pointers.
//!
//! Owns: preparing and keeping statements. It must not hold anything but
//! statements (no state of the store's rows).

use rusqlite::{Connection, Statement};

pub(super) struct Statements<'c> {
    conn: &'c Connection,
    /// (address of the SQL text, its statement); a few dozen at most.
    kept: Vec<(usize, Statement<'c>)>,
}

impl<'c> Statements<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Statements {
            conn,
            kept: Vec::new(),
        }
    }

    /// The connection, for rare writes that keep their own statements
    /// (`prepare_cached`).
    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// The statement for `sql`, prepared on its first use.
    pub(super) fn get(&mut self, sql: &'static str) -> rusqlite::Result<&mut Statement<'c>> {
        let key = sql.as_ptr() as usize;
        let at = match self.kept.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let statement = self.conn.prepare(sql)?;
                self.kept.push((key, statement));
                self.kept.len() - 1
            }
        };
        Ok(&mut self.kept[at].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_prepared_once_and_reused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let mut st = Statements::new(&conn);
        const INSERT: &str = "INSERT INTO t (x) VALUES (?1)";
        for x in 0..3 {
            st.get(INSERT).unwrap().execute([x]).unwrap();
        }
        st.get("SELECT COUNT(*) FROM t").unwrap();
        assert_eq!(st.kept.len(), 2);
        let n: i64 = conn
            .query_row("SELECT SUM(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
