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
pub const STATE_DIR_MODE: u32 = crate::private_files::DIR_MODE;
/// Mode of every file in it.
pub const PRIVATE_FILE_MODE: u32 = crate::private_files::FILE_MODE;
/// What to do about a certificate or key that cannot be used.
const IDENTITY_HINT: &str = "restore it from a backup, or remove cert.pem and key.pem to make a new identity; agents and users then need the new fingerprint";
/// Bytes of randomness in a token (256 bits; SPEC asks for at least 128).
pub const TOKEN_BYTES: usize = 32;
/// Where the CLI looks when neither `--access` nor `$SCALABLE_ACCESS` is given.
pub const DEFAULT_ACCESS_PATH: &str = "./.scalable/access.json";
/// The environment variable naming the access file.
pub const ACCESS_ENV: &str = "SCALABLE_ACCESS";

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    // `cause`, not `source`: the message already says it, and a source would
    // make `{:#}` say it twice.
    #[error("cannot {action} {}: {}", path.display(), tls::io_reason(cause))]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("no broker access file found at {} ({hint})", path.display())]
    NoAccessFile { path: PathBuf, hint: &'static str },
    #[error("cannot generate the broker identity for {}: {cause}", dir.display())]
    Identity { dir: PathBuf, cause: TlsError },
    #[error("{}: {cause} ({IDENTITY_HINT})", path.display())]
    IdentityFile { path: PathBuf, cause: TlsError },
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
    move |cause| AccessError::Io {
        action,
        path,
        cause,
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

impl StateFiles {
    /// True when the dir holds nothing of a broker yet (no certificate, key,
    /// token or access file): only then may a missing or empty database be
    /// a new store. Call it before [`init_or_load`], which creates them.
    pub fn is_new(&self) -> Result<bool, AccessError> {
        for f in [
            &self.cert,
            &self.key,
            &self.secrets,
            &self.access,
            &self.agent_token,
        ] {
            if exists(f)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn exists(path: &Path) -> Result<bool, AccessError> {
    path.try_exists().map_err(io_error("inspect", path))
}

/// Loads the broker's identity, or makes one on first start.
fn init_or_load_identity(files: &StateFiles) -> Result<BrokerIdentity, AccessError> {
    match (exists(&files.cert)?, exists(&files.key)?) {
        (true, true) => {
            restrict_file(&files.key)?;
            restrict_file(&files.cert)?;
            load_identity(files)
        }
        (false, false) => {
            let id = BrokerIdentity::generate(&[]).map_err(|cause| AccessError::Identity {
                dir: files.dir.clone(),
                cause,
            })?;
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

/// Reads `cert.pem` and `key.pem` and checks that they form an identity the
/// broker can serve with; an error names the file at fault.
fn load_identity(files: &StateFiles) -> Result<BrokerIdentity, AccessError> {
    let cert = read_text(&files.cert)?;
    let key = read_text(&files.key)?;
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| AccessError::IdentityFile { path, cause }
    };
    tls::certificate_from_pem(&cert).map_err(file_error(&files.cert))?;
    let id = BrokerIdentity::from_pem(&cert, &key).map_err(file_error(&files.key))?;
    // PEM that decodes can still hold a certificate or key rustls refuses, or
    // a key that is not the certificate's.
    tls::server_config(&id).map_err(file_error(&files.cert))?;
    Ok(id)
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
    AgentTokenFile {
        address: advertise_addr.to_string(),
        fingerprint: fingerprint.clone(),
        token: agent_token.clone(),
    }
    .save(&files.agent_token)?;
    // `access.json` last: scripts, tests and the Python session wait for it as
    // the sign that the broker's files are written (an agent started on its
    // appearance once found no `agent.token` yet).
    save_access(
        &files.access,
        &AccessFile {
            address: advertise_addr.to_string(),
            fingerprint,
            token: user_token,
        },
    )?;
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
mod tests;
