//! The assistants of SPEC §12: `init-component`, `diagnose`, `explain`,
//! `compose` and `migrate`, each with a deterministic heuristic mode (the
//! default, offline) and an LLM mode that falls back to it.
//!
//! Layout: [`yaml`] (the ordered tree they read and write), [`http`] (the one
//! request), [`backend`] (which model, one chat exchange), [`prompt`] (the
//! minijinja templates and the scrub of secrets), [`llm`] (the round with
//! its one repair), then one module per assistant's heuristics:
//! [`diagnose`], [`explain`], [`compose`], [`migrate`], [`init_component`].
//!
//! Must not: print, read the process environment (the CLI passes what it
//! read), or call a result valid: every manifest goes through the CLI's
//! validation glue, which is `scalable validate`'s own code.

pub mod backend;
pub mod compose;
pub mod diagnose;
pub mod explain;
pub mod http;
pub mod init_component;
pub mod llm;
pub mod migrate;
pub mod prompt;
pub mod yaml;
