//! Which `scalable-agent` a pilot runs and where it comes from: on a shared
//! filesystem (local and Slurm pilots) a path found here, on a VM a download
//! at boot or the image's own copy, in a container the image's copy.
//! `scalable render` says it; the broker logs it when it owns pilots.
//!
//! It only names the binary: it must not render (that is `render`'s) nor start
//! anything (the providers'), and it never runs the binary it names.

use std::path::Path;

use scalable_common::handshake;

use crate::render::PilotProvider;

/// Where VM and container pilots find the agent when nothing is downloaded.
pub const IMAGE_AGENT_PATH: &str = "/usr/local/bin/scalable-agent";
/// The agent binary for local and Slurm pilots (the broker's `--agent-exe`).
pub const AGENT_EXE_ENV: &str = "SCALABLE_AGENT_EXE";
/// An `https://`, `s3://` or `gs://` URL VM pilots download the agent from at
/// boot (e.g. `bin/scalable-agent` of the dist tarball, uploaded).
pub const AGENT_URL_ENV: &str = "SCALABLE_AGENT_URL";

/// How the agent's location was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOrigin {
    /// `--agent-exe`.
    Flag,
    /// `$SCALABLE_AGENT_EXE`.
    Env,
    /// Next to the running `scalable` or `scalable-broker`: the same install.
    SameInstall,
    /// Found on this host's `PATH`.
    OnPath,
    /// Found nowhere here: the bare name, looked up on the compute node's `PATH`.
    ComputePath,
    /// Downloaded by the VM at boot from `$SCALABLE_AGENT_URL`.
    Download,
    /// Already on the VM image.
    VmImage,
    /// Inside the agent's container image.
    ContainerImage { image: String },
}

/// One agent binary as a pilot names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinary {
    /// What the pilot runs (a path) or downloads (a URL).
    pub path: String,
    pub origin: AgentOrigin,
}

/// Where pilots get the agent, for every kind of platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLocation {
    /// The binary local and Slurm pilots run (a shared filesystem).
    pub shared: AgentBinary,
    /// Where VM pilots download it from, when set.
    pub vm_url: Option<String>,
}

impl AgentLocation {
    /// The broker's `--agent-exe` (`explicit`), else `$SCALABLE_AGENT_EXE`,
    /// else the `scalable-agent` next to this executable, else on `PATH`;
    /// `$SCALABLE_AGENT_URL` for VMs.
    pub fn resolve(explicit: Option<&Path>) -> AgentLocation {
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        let me = std::env::current_exe().ok();
        let path = std::env::var_os("PATH");
        AgentLocation {
            shared: shared_binary(explicit, env(AGENT_EXE_ENV), me.as_deref(), path),
            vm_url: env(AGENT_URL_ENV).map(|u| u.to_string_lossy().into_owned()),
        }
    }

    /// The binary a pilot of `provider` runs; `image` is the agent image of
    /// container pilots.
    pub fn for_pilot(&self, provider: &PilotProvider, image: Option<&str>) -> AgentBinary {
        let in_image = |origin| AgentBinary {
            path: IMAGE_AGENT_PATH.into(),
            origin,
        };
        match provider {
            PilotProvider::Local | PilotProvider::Slurm { .. } => self.shared.clone(),
            PilotProvider::Ec2 { .. } | PilotProvider::Gcp { .. } => match &self.vm_url {
                Some(url) => AgentBinary {
                    path: url.clone(),
                    origin: AgentOrigin::Download,
                },
                None => in_image(AgentOrigin::VmImage),
            },
            PilotProvider::Fargate { .. } | PilotProvider::Kubernetes { .. } => {
                in_image(AgentOrigin::ContainerImage {
                    image: image.unwrap_or("(no image)").into(),
                })
            }
        }
    }
}

impl AgentBinary {
    /// One line: which binary, where it comes from, and what must hold for it
    /// to start there.
    pub fn describe(&self) -> String {
        let p = &self.path;
        let portable = "the dist tarball's agent (scripts/dist.sh) runs on glibc 2.17 and newer";
        match &self.origin {
            AgentOrigin::Flag => format!("{p} (--agent-exe; {portable})"),
            AgentOrigin::Env => format!("{p} (${AGENT_EXE_ENV}; {portable})"),
            AgentOrigin::SameInstall => format!(
                "{p} (next to this executable: the same install, scalable {}, {})",
                handshake::RELEASE,
                build_note()
            ),
            AgentOrigin::OnPath => format!("{p} (found on PATH; {portable})"),
            AgentOrigin::ComputePath => format!(
                "{p} (not found here: the compute node's PATH must have it; {portable})"
            ),
            AgentOrigin::Download => format!(
                "{p} (downloaded at boot by the VM into {IMAGE_AGENT_PATH}, from ${AGENT_URL_ENV})"
            ),
            AgentOrigin::VmImage => format!(
                "{p} (on the VM image; or set ${AGENT_URL_ENV} to an https://, s3:// or gs:// URL of the dist tarball's bin/scalable-agent to download it at boot)"
            ),
            AgentOrigin::ContainerImage { image } => {
                format!("{p} inside the image {image} (copy the dist tarball's bin/scalable-agent there)")
            }
        }
    }
}

/// What kind of build this executable (and so its install's agent) is.
fn build_note() -> String {
    match handshake::BUILD {
        Some(b) => format!("a portable build for {b}"),
        None => "a development build: it needs a glibc as new as this host's; scripts/dist.sh builds portable ones".into(),
    }
}

/// The shared-filesystem agent from the flag, the environment, this
/// executable's directory or `path` (a `PATH` value), in that order.
fn shared_binary(
    explicit: Option<&Path>,
    env: Option<std::ffi::OsString>,
    me: Option<&Path>,
    path: Option<std::ffi::OsString>,
) -> AgentBinary {
    let shown = |p: &Path| p.display().to_string();
    if let Some(p) = explicit {
        return AgentBinary {
            path: shown(p),
            origin: AgentOrigin::Flag,
        };
    }
    if let Some(p) = env {
        return AgentBinary {
            path: shown(Path::new(&p)),
            origin: AgentOrigin::Env,
        };
    }
    if let Some(p) = me
        .map(|me| me.with_file_name("scalable-agent"))
        .filter(|p| is_executable(p))
    {
        return AgentBinary {
            path: shown(&p),
            origin: AgentOrigin::SameInstall,
        };
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("scalable-agent"))
        .find(|p| is_executable(p));
    match on_path {
        Some(p) => AgentBinary {
            path: shown(&p),
            origin: AgentOrigin::OnPath,
        },
        None => AgentBinary {
            path: "scalable-agent".into(),
            origin: AgentOrigin::ComputePath,
        },
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn the_flag_then_the_environment_then_the_same_install_then_path() {
        let install = tempfile::tempdir().unwrap();
        let me = executable(install.path(), "scalable");
        let agent = executable(install.path(), "scalable-agent");
        let on_path = tempfile::tempdir().unwrap();
        let other = executable(on_path.path(), "scalable-agent");
        let path = Some(std::env::join_paths(["relative/bin".as_ref(), on_path.path()]).unwrap());
        let flag = Path::new("/opt/a/scalable-agent");
        let b = shared_binary(Some(flag), Some("/e".into()), Some(&me), path.clone());
        assert_eq!(b.origin, AgentOrigin::Flag);
        assert_eq!(b.path, "/opt/a/scalable-agent");
        let b = shared_binary(None, Some("/e/scalable-agent".into()), Some(&me), None);
        assert_eq!(
            (b.path.as_str(), b.origin),
            ("/e/scalable-agent", AgentOrigin::Env)
        );
        let b = shared_binary(None, None, Some(&me), path.clone());
        assert_eq!(
            (b.path, b.origin),
            (agent.display().to_string(), AgentOrigin::SameInstall)
        );
        // An install without an agent (a CLI alone): the one on PATH.
        let lone = tempfile::tempdir().unwrap();
        let me = executable(lone.path(), "scalable");
        let b = shared_binary(None, None, Some(&me), path);
        assert_eq!(
            (b.path, b.origin),
            (other.display().to_string(), AgentOrigin::OnPath)
        );
        let b = shared_binary(None, None, Some(&me), None);
        assert_eq!(
            (b.path.as_str(), b.origin),
            ("scalable-agent", AgentOrigin::ComputePath)
        );
    }

    #[test]
    fn vms_download_from_the_url_or_use_the_image_containers_their_image() {
        let shared = AgentBinary {
            path: "/shared/bin/scalable-agent".into(),
            origin: AgentOrigin::SameInstall,
        };
        let mut loc = AgentLocation {
            shared: shared.clone(),
            vm_url: None,
        };
        let ec2 = PilotProvider::Ec2 {
            region: "r".into(),
            instance_type: None,
            ami: None,
        };
        assert_eq!(loc.for_pilot(&PilotProvider::Local, None), shared);
        assert_eq!(loc.for_pilot(&ec2, None).origin, AgentOrigin::VmImage);
        assert_eq!(loc.for_pilot(&ec2, None).path, IMAGE_AGENT_PATH);
        loc.vm_url = Some("https://example.org/scalable-agent".into());
        let b = loc.for_pilot(&ec2, None);
        assert_eq!(b.path, "https://example.org/scalable-agent");
        assert!(
            b.describe().contains("downloaded at boot"),
            "{}",
            b.describe()
        );
        let kube = PilotProvider::Kubernetes {
            namespace: "n".into(),
            kind: crate::render::KubeKind::Job,
            service_account: None,
            name: "x".into(),
        };
        let b = loc.for_pilot(&kube, Some("ghcr.io/x/agent:1"));
        assert_eq!(b.path, IMAGE_AGENT_PATH);
        assert!(b.describe().contains("inside the image ghcr.io/x/agent:1"));
    }

    #[test]
    fn a_development_build_says_it_needs_this_hosts_glibc() {
        let b = AgentBinary {
            path: "/x/scalable-agent".into(),
            origin: AgentOrigin::SameInstall,
        };
        let line = b.describe();
        assert!(
            line.starts_with("/x/scalable-agent (next to this executable"),
            "{line}"
        );
        if handshake::BUILD.is_none() {
            assert!(line.contains("a development build"), "{line}");
        }
    }
}
