//! The broker's state dir and the files users and agents read (SPEC §2).
//!
//! Layout of the state dir (mode 0700, every file 0600):
//!
//! | file          | holds                                         | read by        |
//! | ------------- | --------------------------------------------- | -------------- |
//! | `cert.pem`    | the self-signed certificate                   | broker         |
//! | `key.pem`     | its PKCS#8 private key                        | broker         |
//! | `secrets.json`| SHA-256 hashes of the agent and user tokens   | broker         |
//! | `access.json` | address, fingerprint, user token              | CLI            |
//! | `agent.token` | `address fingerprint token` on one line       | agents         |
//! | `broker.db`   | the broker's store                            | broker         |
//!
//! The broker authenticates against the hashes only; the plain tokens live in
//! the two files handed to users and agents, and are the source the hashes are
//! rebuilt from on each start. This module does files and tokens; it does not
//! open connections.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::tls::{self, BrokerIdentity, TlsError};

/// Mode of the state dir: only the broker's user may enter it.
pub const STATE_DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Bytes of randomness in a token (256 bits; SPEC asks for at least 128).
pub const TOKEN_BYTES: usize = 32;
/// Where the CLI looks when neither `--access` nor `$SCALABLE_ACCESS` is given.
pub const DEFAULT_ACCESS_PATH: &str = "./.scalable/access.json";
/// The environment variable naming the access file.
pub const ACCESS_ENV: &str = "SCALABLE_ACCESS";

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot {action} {}: {}", path.display(), tls::io_reason(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("no broker access file found at {} ({hint})", path.display())]
    NoAccessFile { path: PathBuf, hint: &'static str },
    #[error("invalid broker identity in {}: {source}", dir.display())]
    Identity { dir: PathBuf, source: TlsError },
    #[error(
        "{} has {present} but not {missing}: remove both to make a new identity (agents and users then need the new fingerprint)",
        dir.display()
    )]
    HalfIdentity {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("the system random number generator failed")]
    Random,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AccessError {
    let path = path.to_path_buf();
    move |source| AccessError::Io {
        action,
        path,
        source,
    }
}

// ---------------------------------------------------------------- files

/// Creates `dir` (and its parents) and makes sure only its owner can use it.
pub fn ensure_state_dir(dir: &Path) -> Result<(), AccessError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(STATE_DIR_MODE)
        .create(dir)
        .map_err(io_error("create", dir))?;
    let meta = fs::metadata(dir).map_err(io_error("inspect", dir))?;
    if !meta.is_dir() {
        return Err(AccessError::Invalid {
            what: dir.display().to_string(),
            reason: "exists but is not a directory".into(),
        });
    }
    // An existing dir may be looser than we would have created it, and the
    // umask may have made a new one unusable; either way set it exactly.
    if meta.permissions().mode() & 0o777 != STATE_DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(STATE_DIR_MODE))
            .map_err(io_error("set permissions of", dir))?;
    }
    Ok(())
}

/// Tightens an existing file to 0600 if anyone but its owner may read it.
fn restrict_file(path: &Path) -> Result<(), AccessError> {
    let meta = fs::metadata(path).map_err(io_error("inspect", path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_FILE_MODE))
            .map_err(io_error("set permissions of", path))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new
/// content, never a mix. The file is 0600 from its creation on, so a secret is
/// never briefly readable by others.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AccessError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| AccessError::Invalid {
            what: path.display().to_string(),
            reason: "not a file path".into(),
        })?
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        f.write_all(bytes).map_err(io_error("write", &tmp))?;
        f.sync_all().map_err(io_error("write", &tmp))?;
        fs::rename(&tmp, path).map_err(io_error("replace", path))
    })();
    if result.is_err() {
        // Best effort: the temp file is garbage whether or not this succeeds.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read_text(path: &Path) -> Result<String, AccessError> {
    fs::read_to_string(path).map_err(io_error("read", path))
}

// ---------------------------------------------------------------- tokens

/// A new secret token: 256 random bits as 64 lowercase hex digits.
pub fn new_token() -> Result<String, AccessError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AccessError::Random)?;
    Ok(tls::hex(&bytes))
}

/// SHA-256 of the token, lowercase hex: what the broker stores and compares.
pub fn hash_token(token: &str) -> String {
    tls::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// Whether `token` hashes to `hash_hex`. Both sides of the comparison are
/// fixed-length digests, so nothing about the stored token's length leaks, and
/// the comparison does not stop at the first differing byte.
pub fn token_matches(hash_hex: &str, token: &str) -> bool {
    let want = hash_hex.trim().to_ascii_lowercase();
    let got = hash_token(token);
    want.len() == got.len()
        && want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

// ---------------------------------------------------------------- access.json

/// What the CLI needs to reach and authenticate to a broker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessFile {
    pub address: String,
    pub fingerprint: String,
    /// The user token.
    pub token: String,
}

impl fmt::Debug for AccessFile {
    // Tokens never reach logs (SPEC §2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessFile")
            .field("address", &self.address)
            .field("fingerprint", &self.fingerprint)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub fn load_access(path: &Path) -> Result<AccessFile, AccessError> {
    let text = read_text(path)?;
    let access: AccessFile = serde_json::from_str(&text).map_err(|e| AccessError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    tls::parse_fingerprint(&access.fingerprint).map_err(|e| AccessError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(access)
}

pub fn save_access(path: &Path, access: &AccessFile) -> Result<(), AccessError> {
    let mut json = serde_json::to_vec_pretty(access).map_err(|e| AccessError::Invalid {
        what: path.display().to_string(),
        reason: format!("cannot encode: {e}"),
    })?;
    json.push(b'\n');
    write_private(path, &json)
}

/// Which access file the CLI uses: `--access FILE`, else `$SCALABLE_ACCESS`,
/// else `./.scalable/access.json`. The file must exist.
pub fn find_access(explicit: Option<&Path>) -> Result<PathBuf, AccessError> {
    find_access_from(
        explicit,
        std::env::var_os(ACCESS_ENV).map(PathBuf::from),
        Path::new(DEFAULT_ACCESS_PATH),
    )
}

fn find_access_from(
    explicit: Option<&Path>,
    env: Option<PathBuf>,
    default: &Path,
) -> Result<PathBuf, AccessError> {
    let (path, hint) = if let Some(p) = explicit {
        (p.to_path_buf(), "check the path given to --access")
    } else if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        (p, "check $SCALABLE_ACCESS")
    } else {
        (
            default.to_path_buf(),
            "start scalable-broker here, or pass --access FILE / set SCALABLE_ACCESS",
        )
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(AccessError::NoAccessFile { path, hint })
    }
}

// ---------------------------------------------------------------- agent.token

/// The agent token file: one line `address fingerprint token`.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentTokenFile {
    pub address: String,
    pub fingerprint: String,
    pub token: String,
}

impl fmt::Debug for AgentTokenFile {
    // Tokens never reach logs (SPEC §2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTokenFile")
            .field("address", &self.address)
            .field("fingerprint", &self.fingerprint)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AgentTokenFile {
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        Self::parse_named(text, "agent token file")
    }

    fn parse_named(text: &str, what: &str) -> Result<Self, AccessError> {
        let invalid = |reason: String| AccessError::Invalid {
            what: what.to_string(),
            reason,
        };
        const EXPECTED: &str =
            "expected one line `ADDRESS FINGERPRINT TOKEN` as the broker writes it in agent.token";
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.as_slice() {
            [] => Err(invalid(format!("is empty; {EXPECTED}"))),
            [_] => Err(invalid(format!(
                "has only a token, the broker address and certificate fingerprint are missing; {EXPECTED}"
            ))),
            [first, _] if tls::parse_fingerprint(first).is_ok() => Err(invalid(format!(
                "has a fingerprint and a token, the broker address is missing; {EXPECTED}"
            ))),
            [_, _] => Err(invalid(format!(
                "has two fields, the certificate fingerprint is missing; {EXPECTED}"
            ))),
            [address, fingerprint, token] => {
                if let Err(e) = tls::parse_fingerprint(fingerprint) {
                    return Err(invalid(e.to_string()));
                }
                Ok(Self {
                    address: address.to_string(),
                    fingerprint: fingerprint.to_string(),
                    token: token.to_string(),
                })
            }
            more => Err(invalid(format!("has {} fields; {EXPECTED}", more.len()))),
        }
    }

    /// The file's content, newline-terminated.
    pub fn render(&self) -> String {
        format!("{} {} {}\n", self.address, self.fingerprint, self.token)
    }

    pub fn load(path: &Path) -> Result<Self, AccessError> {
        Self::parse_named(&read_text(path)?, &path.display().to_string())
    }

    pub fn save(&self, path: &Path) -> Result<(), AccessError> {
        write_private(path, self.render().as_bytes())
    }
}

// ---------------------------------------------------------------- state dir

/// What the broker keeps about the tokens: hashes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSecrets {
    pub agent_token_hash: String,
    pub user_token_hash: String,
}

/// Paths of the files in a state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub secrets: PathBuf,
    pub access: PathBuf,
    pub agent_token: PathBuf,
    pub db: PathBuf,
}

impl StateFiles {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            secrets: dir.join("secrets.json"),
            access: dir.join("access.json"),
            agent_token: dir.join("agent.token"),
            db: dir.join("broker.db"),
        }
    }
}

fn exists(path: &Path) -> Result<bool, AccessError> {
    path.try_exists().map_err(io_error("inspect", path))
}

/// Loads the broker's identity, or makes one on first start.
fn init_or_load_identity(files: &StateFiles) -> Result<BrokerIdentity, AccessError> {
    let identity_error = |source| AccessError::Identity {
        dir: files.dir.clone(),
        source,
    };
    match (exists(&files.cert)?, exists(&files.key)?) {
        (true, true) => {
            restrict_file(&files.key)?;
            restrict_file(&files.cert)?;
            let cert = read_text(&files.cert)?;
            let key = read_text(&files.key)?;
            BrokerIdentity::from_pem(&cert, &key).map_err(identity_error)
        }
        (false, false) => {
            let id = BrokerIdentity::generate(&[]).map_err(identity_error)?;
            let (cert, key) = id.to_pem();
            // Key first: a crash in between leaves a half identity that is
            // refused loudly rather than a certificate without its key.
            write_private(&files.key, key.as_bytes())?;
            write_private(&files.cert, cert.as_bytes())?;
            Ok(id)
        }
        (true, false) => Err(AccessError::HalfIdentity {
            dir: files.dir.clone(),
            present: "cert.pem",
            missing: "key.pem",
        }),
        (false, true) => Err(AccessError::HalfIdentity {
            dir: files.dir.clone(),
            present: "key.pem",
            missing: "cert.pem",
        }),
    }
}

/// Prepares the broker's state dir and returns its identity, the token hashes
/// and the plain agent token (for agents the broker starts itself).
///
/// First start: makes the certificate and both tokens. Every start: rewrites
/// `access.json`, `agent.token` and `secrets.json` with `advertise_addr`, since
/// the address (port 0, another host) may change between starts while the
/// certificate and tokens stay. A missing token file means that token is
/// replaced; a corrupt one is an error rather than a silent rotation.
pub fn init_or_load(
    dir: &Path,
    advertise_addr: &str,
) -> Result<(BrokerIdentity, BrokerSecrets, String), AccessError> {
    ensure_state_dir(dir)?;
    let files = StateFiles::new(dir);
    let identity = init_or_load_identity(&files)?;
    let fingerprint = identity.fingerprint();

    let user_token = if exists(&files.access)? {
        load_access(&files.access)?.token
    } else {
        if exists(&files.secrets)? {
            tracing::warn!(path = %files.access.display(), "access file missing; issuing a new user token");
        }
        new_token()?
    };
    let agent_token = if exists(&files.agent_token)? {
        AgentTokenFile::load(&files.agent_token)?.token
    } else {
        if exists(&files.secrets)? {
            tracing::warn!(path = %files.agent_token.display(), "agent token file missing; issuing a new agent token, running agents must be given it");
        }
        new_token()?
    };

    let secrets = BrokerSecrets {
        agent_token_hash: hash_token(&agent_token),
        user_token_hash: hash_token(&user_token),
    };
    let mut json = serde_json::to_vec_pretty(&secrets).map_err(|e| AccessError::Invalid {
        what: files.secrets.display().to_string(),
        reason: format!("cannot encode: {e}"),
    })?;
    json.push(b'\n');
    write_private(&files.secrets, &json)?;
    save_access(
        &files.access,
        &AccessFile {
            address: advertise_addr.to_string(),
            fingerprint: fingerprint.clone(),
            token: user_token,
        },
    )?;
    AgentTokenFile {
        address: advertise_addr.to_string(),
        fingerprint,
        token: agent_token.clone(),
    }
    .save(&files.agent_token)?;
    Ok((identity, secrets, agent_token))
}

/// Reads `secrets.json`.
pub fn load_secrets(path: &Path) -> Result<BrokerSecrets, AccessError> {
    serde_json::from_str(&read_text(path)?).map_err(|e| AccessError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn state_dir_is_created_0700_and_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        ensure_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn write_private_is_0600_and_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("secret");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn write_private_error_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing-dir/secret");
        let err = write_private(&path, b"x").unwrap_err().to_string();
        assert!(err.starts_with("cannot create "), "{err}");
        assert!(err.contains("missing-dir"), "{err}");
        assert!(err.ends_with("no such file or directory"), "{err}");
    }

    #[test]
    fn tokens_are_random_hex_and_match_their_hash() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let h = hash_token(&a);
        assert_eq!(h.len(), 64);
        assert!(token_matches(&h, &a));
        assert!(token_matches(&h.to_uppercase(), &a));
        assert!(!token_matches(&h, &b));
        assert!(!token_matches("", &a));
        assert!(!token_matches(&h[..63], &a));
    }

    #[test]
    fn find_access_order_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("access.json");
        fs::write(&file, "{}").unwrap();
        let missing = tmp.path().join("nope.json");
        let find = |explicit: Option<&Path>, env: Option<&Path>| {
            find_access_from(explicit, env.map(Path::to_path_buf), &missing)
        };

        assert_eq!(find(Some(&file), Some(&missing)).unwrap(), file);
        assert_eq!(find(None, Some(&file)).unwrap(), file);
        assert_eq!(find_access_from(None, None, &file).unwrap(), file);
        assert_eq!(
            find_access_from(None, Some("".into()), &file).unwrap(),
            file
        );
        let err = find(Some(&missing), None).unwrap_err().to_string();
        assert!(
            err.contains("nope.json") && err.contains("--access"),
            "{err}"
        );
        let err = find(None, Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("SCALABLE_ACCESS"), "{err}");
    }

    #[test]
    fn default_access_error_text() {
        let tmp = tempfile::tempdir().unwrap();
        let err = find_access_from(None, None, &tmp.path().join(DEFAULT_ACCESS_PATH))
            .unwrap_err()
            .to_string();
        let expected = format!(
            "no broker access file found at {}/./.scalable/access.json (start scalable-broker here, or pass --access FILE / set SCALABLE_ACCESS)",
            tmp.path().display()
        );
        assert_eq!(err, expected);
    }

    #[test]
    fn token_file_round_trip_and_errors() {
        let fp = "ab".repeat(32);
        let t = AgentTokenFile::parse(&format!("host:7420 {fp} secret\n\n")).unwrap();
        assert_eq!(t.address, "host:7420");
        assert_eq!(t.fingerprint, fp);
        assert_eq!(t.token, "secret");
        assert_eq!(AgentTokenFile::parse(&t.render()).unwrap(), t);
        assert!(!format!("{t:?}").contains("secret"));

        let err = |s: &str| AgentTokenFile::parse(s).unwrap_err().to_string();
        assert!(err("").contains("is empty"));
        let e = err("secret\n");
        assert!(e.contains("only a token") && e.contains("address"), "{e}");
        let e = err(&format!("{fp} secret"));
        assert!(e.contains("broker address is missing"), "{e}");
        let e = err("host:1 secret");
        assert!(e.contains("fingerprint is missing"), "{e}");
        let e = err("host:1 xyz secret");
        assert!(e.contains("invalid fingerprint"), "{e}");
        assert!(err(&format!("a {fp} b c")).contains("4 fields"));
    }

    #[test]
    fn load_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("agent.token");
        fs::write(&path, "just-a-token\n").unwrap();
        let e = AgentTokenFile::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        let e = load_access(&tmp.path().join("access.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("access.json"),
            "{e}"
        );
    }

    #[test]
    fn first_start_creates_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let (id, secrets, agent_token) = init_or_load(&dir, "10.0.0.1:7420").unwrap();
        let files = StateFiles::new(&dir);
        assert_eq!(mode(&dir), 0o700);
        for f in [
            &files.cert,
            &files.key,
            &files.secrets,
            &files.access,
            &files.agent_token,
        ] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }

        let access = load_access(&files.access).unwrap();
        assert_eq!(access.address, "10.0.0.1:7420");
        assert_eq!(access.fingerprint, id.fingerprint());
        assert!(token_matches(&secrets.user_token_hash, &access.token));
        assert!(token_matches(&secrets.agent_token_hash, &agent_token));
        assert_ne!(access.token, agent_token);

        let agent = AgentTokenFile::load(&files.agent_token).unwrap();
        assert_eq!(agent.token, agent_token);
        assert_eq!(agent.fingerprint, id.fingerprint());
        assert_eq!(load_secrets(&files.secrets).unwrap(), secrets);
        let on_disk = fs::read_to_string(&files.secrets).unwrap();
        assert!(!on_disk.contains(&agent_token) && !on_disk.contains(&access.token));
    }

    #[test]
    fn restart_reuses_identity_and_tokens_but_updates_address() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let (id1, secrets1, agent1) = init_or_load(&dir, "127.0.0.1:40001").unwrap();
        let user1 = load_access(&StateFiles::new(&dir).access).unwrap().token;

        // Someone loosened things between starts.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let key = StateFiles::new(&dir).key;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();

        let (id2, secrets2, agent2) = init_or_load(&dir, "127.0.0.1:40002").unwrap();
        assert_eq!(id1.fingerprint(), id2.fingerprint());
        assert_eq!(id1.key_der, id2.key_der);
        assert_eq!(secrets1, secrets2);
        assert_eq!(agent1, agent2);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&key), 0o600);

        let files = StateFiles::new(&dir);
        let access = load_access(&files.access).unwrap();
        assert_eq!(access.token, user1);
        assert_eq!(access.address, "127.0.0.1:40002");
        let agent = AgentTokenFile::load(&files.agent_token).unwrap();
        assert_eq!(agent.address, "127.0.0.1:40002");
        assert_eq!(agent.token, agent1);
    }

    #[test]
    fn missing_token_file_issues_a_new_token_only_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let (_, s1, agent1) = init_or_load(&dir, "h:1").unwrap();
        fs::remove_file(StateFiles::new(&dir).agent_token).unwrap();
        let (_, s2, agent2) = init_or_load(&dir, "h:1").unwrap();
        assert_ne!(agent1, agent2);
        assert_ne!(s1.agent_token_hash, s2.agent_token_hash);
        assert_eq!(s1.user_token_hash, s2.user_token_hash);
    }

    #[test]
    fn half_identity_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        init_or_load(&dir, "h:1").unwrap();
        fs::remove_file(StateFiles::new(&dir).key).unwrap();
        let e = init_or_load(&dir, "h:1").unwrap_err().to_string();
        assert!(e.contains("has cert.pem but not key.pem"), "{e}");
    }

    #[test]
    fn identity_serves_quic_after_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        init_or_load(&dir, "h:1").unwrap();
        let (id, _, _) = init_or_load(&dir, "h:1").unwrap();
        tls::server_config(&id).unwrap();
    }
}
