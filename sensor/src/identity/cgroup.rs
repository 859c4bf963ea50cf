//! Container and pod identity from cgroup paths.
//!
//! Every runtime names the cgroup of a container after the container id, in
//! a handful of layouts that depend on the runtime, the cgroup driver
//! (cgroupfs or systemd) and the cgroup version:
//!
//! | runtime | cgroupfs driver | systemd driver |
//! |---|---|---|
//! | docker | `/docker/<id>` | `/system.slice/docker-<id>.scope` |
//! | containerd | `/<namespace>/<id>` | `/system.slice/<namespace>-<id>.scope`, `cri-containerd-<id>.scope` |
//! | CRI-O | `/kubepods/.../crio-<id>` | `crio-<id>.scope` |
//! | podman | `/libpod_parent/libpod-<id>` | `/machine.slice/libpod-<id>.scope` |
//! | Kubernetes | `/kubepods/<qos>/pod<uid>/<id>` | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<runtime>-<id>.scope` |
//!
//! Nested runtimes (kind, docker-in-docker) put one layout inside another;
//! the innermost container is the actor. A container id is 64 lowercase hex
//! digits; anything shorter is not taken for one (hosts have other hex
//! cgroup names).

/// A container named by a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupContainer {
    /// 64 hex digits.
    pub id: String,
    /// `docker`, `containerd`, `cri-o`, `podman`; `None` when the layout
    /// names no runtime (a bare id under a Kubernetes pod cgroup).
    pub runtime: Option<&'static str>,
    /// The containerd namespace, for the cgroupfs layout `/<ns>/<id>`.
    pub namespace: Option<String>,
    /// Kubernetes pod uid (with dashes), when under a `kubepods` cgroup.
    pub pod_uid: Option<String>,
    /// Kubernetes QoS class: `guaranteed`, `burstable`, `besteffort`.
    pub qos: Option<&'static str>,
}

/// What `/proc/<pid>/cgroup` says about a process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupInfo {
    /// The path that identifies the process best: the one naming its
    /// container, else the unified (v2) path, else the first v1 path.
    pub path: Option<String>,
    pub container: Option<CgroupContainer>,
    /// The unified (v2) hierarchy's path, which the kernel's cgroup id
    /// names.
    pub unified: Option<String>,
}

/// Parses `/proc/<pid>/cgroup` (v1, v2 or hybrid). Lines are
/// `hierarchy-id:controllers:path`; the unified hierarchy is `0::path`.
pub fn parse_proc_cgroup(text: &str) -> CgroupInfo {
    let mut unified = None;
    let mut first_v1 = None;
    let mut best: Option<(u8, &str, CgroupContainer)> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let is_unified = id == "0" && controllers.is_empty();
        if is_unified {
            unified = Some(path);
        } else if first_v1.is_none() && path != "/" {
            first_v1 = Some(path);
        }
        if let Some(container) = parse_path(path) {
            // Prefer the unified line, then name=systemd, then any controller:
            // they agree for real runtimes, and the order makes the choice
            // stable when they do not.
            let rank = if is_unified {
                0
            } else if controllers == "name=systemd" {
                1
            } else {
                2
            };
            if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                best = Some((rank, path, container));
            }
        }
    }
    match best {
        Some((_, path, container)) => CgroupInfo {
            path: Some(path.to_owned()),
            container: Some(container),
            unified: unified.map(str::to_owned),
        },
        None => CgroupInfo {
            path: unified
                .filter(|p| *p != "/")
                .or(first_v1)
                .or(unified)
                .map(str::to_owned),
            container: None,
            unified: unified.map(str::to_owned),
        },
    }
}

/// The innermost container a cgroup path names, if any.
pub fn parse_path(path: &str) -> Option<CgroupContainer> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // Innermost container: scan from the leaf up. Sub-cgroups below a
    // container's own (systemd's `init.scope` inside a container, podman's
    // `container` leaf) are skipped on the way.
    for (i, component) in components.iter().enumerate().rev() {
        let Some((runtime, id)) = container_component(component) else {
            continue;
        };
        let mut found = CgroupContainer {
            id: id.to_owned(),
            runtime,
            namespace: None,
            pod_uid: None,
            qos: None,
        };
        // Kubernetes pod above it (cgroupfs: `pod<uid>`, systemd:
        // `kubepods-<qos>-pod<uid_with_underscores>.slice`).
        if let Some(parent) = i.checked_sub(1).map(|p| components[p])
            && let Some(uid) = pod_uid(parent)
        {
            found.pod_uid = Some(uid);
            found.qos = components[..i].iter().rev().find_map(|c| qos_of(c));
            if found.qos.is_none() && components[..i].iter().any(|c| c.starts_with("kubepods")) {
                found.qos = Some("guaranteed");
            }
        } else if runtime.is_none() {
            // `/<namespace>/<id>`: containerd's cgroupfs layout; docker's
            // `/docker/<id>` is the same shape.
            let ns = i.checked_sub(1).map(|p| components[p]);
            match ns {
                Some("docker") => found.runtime = Some("docker"),
                Some(ns) if is_plain_name(ns) => {
                    found.runtime = Some("containerd");
                    found.namespace = Some(ns.to_owned());
                }
                _ => {}
            }
        }
        return Some(found);
    }
    None
}

/// A path component that names a container: the runtime (if the
/// component says) and the id.
fn container_component(component: &str) -> Option<(Option<&'static str>, &str)> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, &str); 6] = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
        ("containerd-", "containerd"),
        ("cri-dockerd-", "docker"),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some((Some(runtime), id));
        }
    }
    // `crio-conmon-<id>` and `libpod-conmon-<id>` are the monitors, not the
    // container: not matched above because the id check fails.
    is_container_id(component).then_some((None, component))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.ends_with(".slice")
        && !s.ends_with(".scope")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The pod uid a pod cgroup names, with dashes.
fn pod_uid(component: &str) -> Option<String> {
    let raw = if let Some(slice) = component.strip_suffix(".slice") {
        // kubepods-besteffort-pod<uid>.slice / kubepods-pod<uid>.slice
        slice.rsplit_once("-pod")?.1
    } else {
        component.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    let valid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    valid.then_some(uid)
}

fn qos_of(component: &str) -> Option<&'static str> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    if c == "besteffort" || c.ends_with("-besteffort") {
        Some("besteffort")
    } else if c == "burstable" || c.ends_with("-burstable") {
        Some("burstable")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
    const UID: &str = "8a2f6c1e-5b3d-4e7a-9c0f-1d2e3f4a5b6c";

    fn path(p: &str) -> CgroupContainer {
        let p = p
            .replace("{uid_}", &UID.replace('-', "_"))
            .replace("{uid}", UID)
            .replace("{id}", ID);
        parse_path(&p).unwrap_or_else(|| panic!("no container in {p}"))
    }

    #[test]
    fn docker_layouts() {
        for p in [
            "/docker/{id}",
            "/system.slice/docker-{id}.scope",
            // Docker on a cgroup v2 host with a private cgroup namespace
            // seen from the host, with systemd inside the container.
            "/system.slice/docker-{id}.scope/init.scope",
        ] {
            let c = path(p);
            assert_eq!((c.id.as_str(), c.runtime), (ID, Some("docker")), "{p}");
            assert_eq!(c.pod_uid, None);
        }
    }

    #[test]
    fn containerd_layouts() {
        let c = path("/default/{id}");
        assert_eq!(
            (c.runtime, c.namespace.as_deref()),
            (Some("containerd"), Some("default"))
        );
        let c = path("/moby/{id}");
        assert_eq!(c.namespace.as_deref(), Some("moby"));
        let c = path("/system.slice/containerd-{id}.scope");
        assert_eq!((c.id.as_str(), c.runtime), (ID, Some("containerd")));
    }

    #[test]
    fn podman_and_crio_layouts() {
        for p in [
            "/machine.slice/libpod-{id}.scope",
            "/libpod_parent/libpod-{id}",
            "/machine.slice/libpod-{id}.scope/container",
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope",
        ] {
            let c = path(p);
            assert_eq!((c.id.as_str(), c.runtime), (ID, Some("podman")), "{p}");
        }
        // conmon, the monitor, is not the container.
        assert_eq!(
            parse_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        let c = path("/machine.slice/crio-{id}.scope");
        assert_eq!(c.runtime, Some("cri-o"));
        assert_eq!(
            parse_path(&format!("/system.slice/crio-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn kubernetes_cgroupfs_layouts() {
        let c = path("/kubepods/besteffort/pod{uid}/{id}");
        assert_eq!(c.pod_uid.as_deref(), Some(UID));
        assert_eq!((c.qos, c.runtime), (Some("besteffort"), None));
        let c = path("/kubepods/burstable/pod{uid}/{id}");
        assert_eq!(c.qos, Some("burstable"));
        let c = path("/kubepods/pod{uid}/{id}");
        assert_eq!(
            (c.qos, c.pod_uid.as_deref()),
            (Some("guaranteed"), Some(UID))
        );
        let c = path("/kubepods/besteffort/pod{uid}/crio-{id}");
        assert_eq!(
            (c.runtime, c.pod_uid.as_deref()),
            (Some("cri-o"), Some(UID))
        );
    }

    #[test]
    fn kubernetes_systemd_layouts() {
        for (p, runtime, qos) in [
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
                Some("containerd"),
                "besteffort",
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/crio-{id}.scope",
                Some("cri-o"),
                "burstable",
            ),
            (
                "/kubepods.slice/kubepods-pod{uid_}.slice/docker-{id}.scope",
                Some("docker"),
                "guaranteed",
            ),
        ] {
            let c = path(p);
            assert_eq!(
                (c.id.as_str(), c.runtime, c.qos, c.pod_uid.as_deref()),
                (ID, runtime, Some(qos), Some(UID)),
                "{p}"
            );
        }
    }

    #[test]
    fn nested_runtimes_give_the_innermost_container() {
        // kind: a node container running pods.
        let outer = "a".repeat(64);
        let p = format!("/docker/{outer}/kubepods/besteffort/pod{UID}/{ID}");
        let c = parse_path(&p).expect("container");
        assert_eq!((c.id.as_str(), c.pod_uid.as_deref()), (ID, Some(UID)));
    }

    #[test]
    fn host_paths_are_not_containers() {
        for p in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/sshd.service",
            "/process_api/6c12c6ac6aa4dcb410a70301b2919f43",
            "/kubepods/besteffort/pod8a2f6c1e-5b3d-4e7a-9c0f-1d2e3f4a5b6c",
            "/docker",
            &format!("/docker/{}", &ID[..12]),
            &format!("/docker/{}", ID.to_uppercase()),
        ] {
            assert_eq!(parse_path(p), None, "{p}");
        }
    }

    #[test]
    fn proc_cgroup_v1_v2_and_hybrid() {
        // Hybrid host (v1 controllers plus the unified hierarchy), docker
        // with the cgroupfs driver: v1 paths name the container, the unified
        // one too.
        let hybrid = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/docker/{ID}\n"
        );
        let info = parse_proc_cgroup(&hybrid);
        assert_eq!(info.container.map(|c| c.id), Some(ID.to_owned()));
        assert_eq!(info.path, Some(format!("/docker/{ID}")));

        // Hybrid host where the runtime left the unified hierarchy alone.
        let hybrid_v1_only =
            format!("4:memory:/kubepods/besteffort/pod{UID}/{ID}\n3:cpuset:/\n0::/\n");
        let info = parse_proc_cgroup(&hybrid_v1_only);
        assert_eq!(info.container.and_then(|c| c.pod_uid), Some(UID.to_owned()));

        // Pure v2.
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            parse_proc_cgroup(&v2).container.and_then(|c| c.runtime),
            Some("docker")
        );

        // Host process: the unified path, else the first v1 one.
        let host = "4:memory:/process_api/6c12\n3:cpuset:/\n0::/\n";
        let info = parse_proc_cgroup(host);
        assert_eq!(
            (
                info.path.as_deref(),
                info.container,
                info.unified.as_deref()
            ),
            (Some("/process_api/6c12"), None, Some("/"))
        );
        let host_v2 = "0::/user.slice/user-0.slice/session-1.scope\n";
        assert_eq!(
            parse_proc_cgroup(host_v2).path.as_deref(),
            Some("/user.slice/user-0.slice/session-1.scope")
        );

        // Garbage does not panic.
        assert_eq!(
            parse_proc_cgroup("\n::\nnonsense\n0:"),
            CgroupInfo::default()
        );
    }
}
