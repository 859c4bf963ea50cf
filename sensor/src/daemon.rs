//! The running daemon: load, attach, read the ring buffer, report health,
//! and stop cleanly on SIGINT/SIGTERM (every probe detached).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::oneshot};
use tracing::{info, warn};

use crate::{
    bpf::{
        self, KernelCounters,
        attach::{AttachStats, Attacher},
    },
    config::Config,
    credential::Fingerprinter,
    pipeline::Pipeline,
    sink::Outputs,
};

/// How long network sinks keep delivering at a clean stop before what is
/// left waits in their spools for the next start.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often kernel loss counters are checked; a change is reported at once.
const LOSS_CHECK: Duration = Duration::from_secs(1);
/// The idle drain tick grows up to this many times `ring_buffer_poll_ms`.
const IDLE_POLL_BACKOFF: u32 = 8;
/// How often image layers are looked at for TLS libraries of new images.
const LAYER_RESCAN: Duration = Duration::from_secs(5);

fn attach_stats(stats: &Mutex<AttachStats>) -> AttachStats {
    stats
        .lock()
        .map(|s| s.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Runs until a stop signal. Must be called inside a tokio runtime.
/// `reload` reads the configuration again (SIGHUP).
pub async fn run(
    config: Config,
    reload: Box<dyn Fn() -> anyhow::Result<Config>>,
) -> anyhow::Result<()> {
    config.validate()?;
    preflight()?;
    let host_name = match &config.host_name {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into()),
    };
    // A policy that does not load stops the sensor before anything else.
    let policy = match &config.policy_file {
        Some(path) => Some(crate::policy::Policy::load(path)?),
        None => None,
    };
    let fingerprinter = Fingerprinter::load_or_create(&config.fingerprint_key_file)?;
    let integrity_key = crate::credential::load_or_create_key(&config.integrity_key_file)
        .context("the integrity key")?;
    // Every sink opens (files created, spools read, senders started)
    // before anything loads: a bad sink stops the sensor here.
    let outputs = Outputs::open(
        &config.effective_sinks(),
        integrity_key,
        &config.spool_dir,
        &host_name,
    )?;

    // Below an eighth of the ring waiting, records are drained by the poll
    // tick instead of waking the daemon one by one.
    let poll_ms = config.ring_buffer_poll_ms;
    let wakeup_bytes = if poll_ms == 0 {
        0
    } else {
        u64::from(config.ring_buffer_bytes / 8)
    };
    let loaded = bpf::load(config.ring_buffer_bytes, wakeup_bytes, policy.is_some())
        .context("loading the kernel programs")?;
    info!(
        ring_buffer_bytes = config.ring_buffer_bytes,
        "kernel programs loaded, tracepoints attached"
    );
    let bpf::Loaded {
        ebpf,
        events,
        counters,
        tables,
        policy: policy_tables,
    } = loaded;
    let policy = match (policy, policy_tables) {
        (None, _) => None,
        (Some(policy), Some(Ok(tables))) => {
            info!(
                version = %policy.version,
                rules = policy.rules.len(),
                enforced = policy.rules.iter().filter(|r| r.kernel_enforced()).count(),
                "policy loaded; connect hooks attached to the cgroup v2 root"
            );
            Some(crate::policy::live::LivePolicy::new(
                policy,
                Some(Box::new(tables)),
            ))
        }
        (Some(policy), Some(Err(err))) if policy.enforces() => {
            anyhow::bail!(
                "the policy {} enforces rules, but the connect hooks could not be attached: {err}",
                policy.path.display()
            )
        }
        (Some(policy), other) => {
            if let Some(Err(err)) = other {
                warn!(%err, "connect hooks not attached; the policy is judged, not enforced");
            }
            Some(crate::policy::live::LivePolicy::new(policy, None))
        }
    };

    // The attacher owns the programs; it runs on its own thread because
    // reading ELF files (node is 100 MB) must not stall the event loop.
    let stats = Arc::new(Mutex::new(AttachStats::default()));
    let (scan_tx, scan_rx) = mpsc::channel::<u32>();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    let attacher_stats = Arc::clone(&stats);
    let host_root = config.host_root.clone();
    let attacher = std::thread::Builder::new()
        .name("attacher".into())
        .spawn(move || -> anyhow::Result<()> {
            let mut attacher = match Attacher::new(ebpf, &host_root, attacher_stats) {
                Ok(attacher) => attacher,
                Err(err) => {
                    let _ = ready_tx.send(Err(err.to_string()));
                    return Err(err.into());
                }
            };
            attacher.scan_system();
            let _ = ready_tx.send(Ok(()));
            // Batches of pids: an exec is followed by a burst of mmaps.
            // Between them, image layers are looked at for new images.
            let mut layers_scanned = Instant::now();
            loop {
                let first = match scan_rx.recv_timeout(LAYER_RESCAN) {
                    Ok(pid) => Some(pid),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                if let Some(pid) = first {
                    let mut batch = BTreeSet::from([pid]);
                    batch.extend(scan_rx.try_iter());
                    for pid in batch {
                        attacher.scan_pid(pid);
                    }
                }
                if layers_scanned.elapsed() >= LAYER_RESCAN {
                    attacher.scan_image_layers();
                    layers_scanned = Instant::now();
                }
            }
            // The uprobes first, side by side; then dropping the attacher
            // drops the eBPF object: every program is unloaded.
            attacher.detach_all();
            drop(attacher);
            Ok(())
        })
        .context("starting the attacher thread")?;

    let mut pipeline = Pipeline::new(config.clone(), host_name, fingerprinter, outputs);
    pipeline.set_kernel_tables(tables);
    pipeline.set_scan_sender(scan_tx.clone());
    pipeline.set_attach_stats(Arc::clone(&stats));
    pipeline.procs.seed();
    if let Some(policy) = policy {
        pipeline.set_policy(policy);
    }
    // SAFETY: the fd belongs to the RingBuf owned by the AsyncFd and stays
    // open, and the same, for as long as the AsyncFd lives.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut health = tokio::time::interval(Duration::from_secs(config.health_interval_secs));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    health.tick().await;
    let mut loss = tokio::time::interval(LOSS_CHECK);
    loss.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_kernel = KernelCounters::default();
    // The metrics endpoint serves a snapshot refreshed every second.
    let metrics = match &config.metrics_address {
        Some(address) => {
            let snapshot = crate::metrics::Snapshot::default();
            crate::metrics::serve(address.clone(), std::sync::Arc::clone(&snapshot))
                .await
                .with_context(|| format!("metrics_address {address}"))?;
            Some(snapshot)
        }
        None => None,
    };
    let mut ready = Some(ready_rx);
    // The drain tick backs off while the ring stays empty (each wakeup of
    // an idle daemon costs a context switch), and snaps back at the first
    // record. Execs wake the daemon anyway.
    let poll_base = Duration::from_millis(poll_ms.max(1));
    let mut poll_delay = poll_base;
    let poll = tokio::time::sleep(poll_delay);
    tokio::pin!(poll);

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                // The kernel only wakes a consumer that has caught up, so
                // readiness is cleared only once the ring is empty; a cut
                // batch leaves it set and the loop comes straight back.
                if drain(guard.get_inner_mut(), &mut pipeline).1 {
                    guard.clear_ready();
                }
                poll_delay = poll_base;
            }
            () = &mut poll, if poll_ms > 0 => {
                // No wakeup came for these records: drain them all now (a
                // few batches at most before timers get their turn).
                let mut got = 0;
                for _ in 0..16 {
                    let (n, empty) = drain(ring.get_mut(), &mut pipeline);
                    got += n;
                    if empty {
                        break;
                    }
                }
                poll_delay = if got > 0 {
                    poll_base
                } else {
                    (poll_delay * 2).min(poll_base * IDLE_POLL_BACKOFF)
                };
                poll.as_mut().reset(tokio::time::Instant::now() + poll_delay);
            }
            Some(result) = async { match ready.as_mut() { Some(rx) => Some(rx.await), None => None } }, if ready.is_some() => {
                ready = None;
                match result {
                    Ok(Ok(())) => {
                        let attach = attach_stats(&stats);
                        info!(files = attach.files_probed.len(), "TLS probes attached; sensor ready");
                        pipeline.health("ready", bpf::read_counters(&counters), &attach);
                    }
                    // Without its TLS probes the sensor would run half-blind:
                    // refuse, and say why.
                    Ok(Err(err)) => anyhow::bail!("loading the TLS probes: {err}"),
                    Err(_) => anyhow::bail!("the attacher thread died before it was ready"),
                }
            }
            _ = health.tick() => {
                pipeline.sweep();
                pipeline.health("running", bpf::read_counters(&counters), &attach_stats(&stats));
            }
            _ = loss.tick() => {
                pipeline.tick();
                let kernel = bpf::read_counters(&counters);
                if let Some(snapshot) = &metrics {
                    let text = pipeline.metrics(&kernel, &attach_stats(&stats));
                    if let Ok(mut s) = snapshot.lock() {
                        *s = text;
                    }
                }
                if kernel.ringbuf_drops != last_kernel.ringbuf_drops {
                    warn!(drops = kernel.ringbuf_drops - last_kernel.ringbuf_drops, "ring buffer full: records lost");
                    pipeline.health("degraded", kernel, &attach_stats(&stats));
                }
                last_kernel = kernel;
            }
            _ = sighup.recv() => {
                info!("SIGHUP: reopening output files and reloading the config");
                pipeline.reopen_outputs();
                match reload() {
                    Ok(new) => {
                        for note in pipeline.reload(&new) {
                            warn!("config reload: {note}");
                        }
                    }
                    Err(err) => warn!("config reload refused, the running config stays: {err:#}"),
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    info!("stopping");
    // Detach first (dropping the attacher's eBPF object unloads every
    // program), so no new records arrive; then drain what is left.
    pipeline.stop_scans();
    drop(scan_tx);
    match attacher.join() {
        Ok(result) => result?,
        Err(_) => warn!("attacher thread panicked"),
    }
    info!("all probes detached");
    let ring_buf = ring.get_mut();
    while let Some(item) = ring_buf.next() {
        pipeline.handle(&item);
    }
    pipeline.drain();
    pipeline.health(
        "stopped",
        bpf::read_counters(&counters),
        &attach_stats(&stats),
    );
    pipeline.close_outputs(STOP_GRACE);
    Ok(())
}

/// Hands up to one batch of records to the pipeline and flushes; bounded so
/// timers and signals are not starved. Returns the records handled and
/// whether the ring is empty.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    pipeline: &mut Pipeline,
) -> (usize, bool) {
    let mut handled = 0;
    let mut empty = false;
    for _ in 0..8192 {
        match ring.next() {
            Some(item) => {
                pipeline.handle(&item);
                handled += 1;
            }
            None => {
                empty = true;
                break;
            }
        }
    }
    if handled > 0 {
        pipeline.flush();
    }
    (handled, empty)
}

/// What the sensor needs before it tries to load anything (the same lines
/// `sensor check` starts with): a failure stops it here, saying why.
fn preflight() -> anyhow::Result<()> {
    let lines = crate::check::basics();
    for l in &lines {
        if l.status == crate::check::Status::Warn {
            warn!("{}: {}", l.check, l.detail);
        }
    }
    if !crate::check::passed(&lines) {
        let failed: Vec<String> = lines
            .iter()
            .filter(|l| l.status == crate::check::Status::Fail)
            .map(|l| match &l.fix {
                Some(fix) => format!("{}: {} ({fix})", l.check, l.detail),
                None => format!("{}: {}", l.check, l.detail),
            })
            .collect();
        anyhow::bail!("this host cannot run the sensor: {}", failed.join("; "));
    }
    // The tracing filesystem is the last thing that may need
    // CAP_SYS_ADMIN; from here on the sensor keeps only what it needs.
    bpf::ensure_tracefs().context("mounting tracefs")?;
    let keep = crate::caps::needed();
    crate::caps::drop_all_but(&keep).context("dropping capabilities")?;
    let held = crate::caps::effective();
    info!(
        kept = %keep
            .iter()
            .filter(|c| crate::caps::has(held, **c))
            .map(|c| crate::caps::name(*c))
            .collect::<Vec<_>>()
            .join(","),
        "capabilities dropped to what the sensor needs"
    );
    Ok(())
}

/// `sensor check`: the host lines, then the real thing: the kernel
/// programs loaded and attached (and detached again) and the TLS
/// libraries probed, on the host and in running containers.
pub fn check(config: &Config) -> Vec<crate::check::Line> {
    use crate::check::{Line, Status};
    let mut lines = crate::check::basics();
    lines.extend(crate::check::host(config));
    let push = |lines: &mut Vec<Line>, check: &str, status, detail: String, fix: Option<&str>| {
        lines.push(Line {
            check: check.into(),
            status,
            detail,
            fix: fix.map(str::to_owned),
        });
    };
    if !crate::check::passed(&lines[..]) {
        push(
            &mut lines,
            "kernel programs",
            Status::Fail,
            "not tried: fix the failures above first".into(),
            None,
        );
        return lines;
    }
    if let Err(err) = bpf::ensure_tracefs() {
        push(
            &mut lines,
            "kernel programs",
            Status::Fail,
            format!("{err}"),
            Some("mount tracefs"),
        );
        return lines;
    }
    // What follows runs with the capabilities the daemon keeps, so what
    // passes here works in the daemon too.
    let keep = crate::caps::needed();
    if let Err(err) = crate::caps::drop_all_but(&keep) {
        push(
            &mut lines,
            "capabilities kept",
            Status::Fail,
            format!("dropping the others failed: {err}"),
            None,
        );
        return lines;
    }
    push(
        &mut lines,
        "capabilities kept",
        Status::Pass,
        keep.iter()
            .map(|c| crate::caps::name(*c))
            .collect::<Vec<_>>()
            .join(", "),
        None,
    );
    // The daemon's wakeup threshold (an eighth of the ring), not 0: the
    // loader fixes it as a constant, so the verifier walks the same code
    // the daemon runs.
    let loaded = match bpf::load(64 * 1024, 64 * 1024 / 8, true) {
        Ok(loaded) => loaded,
        Err(err) => {
            push(
                &mut lines,
                "kernel programs",
                Status::Fail,
                format!("{err:#}"),
                Some("see the error; the kernel needs tracepoints, BPF ring buffers and uprobes"),
            );
            return lines;
        }
    };
    push(
        &mut lines,
        "tracepoints",
        Status::Pass,
        format!("{} attached (sched, syscalls)", bpf::TRACEPOINTS.len()),
        None,
    );
    push(
        &mut lines,
        "ring buffer",
        Status::Pass,
        "created".into(),
        None,
    );
    match &loaded.policy {
        Some(Ok(_)) => push(
            &mut lines,
            "cgroup connect hooks",
            Status::Pass,
            "cgroup/connect4 and connect6 attached at the cgroup v2 root (policy enforcement)"
                .into(),
            None,
        ),
        Some(Err(err)) => push(
            &mut lines,
            "cgroup connect hooks",
            if config.policy_file.is_some() {
                Status::Fail
            } else {
                Status::Warn
            },
            err.clone(),
            Some(
                "policy enforcement needs cgroup v2 mounted and BPF cgroup programs; without them a policy's deny rules are reported, not enforced",
            ),
        ),
        None => {}
    }
    if let Some(path) = &config.policy_file {
        match crate::policy::Policy::load(path) {
            Ok(p) => push(
                &mut lines,
                "policy",
                Status::Pass,
                format!(
                    "{} (version {}): {} rule(s), {} enforced in the kernel",
                    path.display(),
                    p.version,
                    p.rules.len(),
                    p.rules.iter().filter(|r| r.kernel_enforced()).count()
                ),
                None,
            ),
            Err(err) => push(
                &mut lines,
                "policy",
                Status::Fail,
                err.to_string(),
                Some("fix the rule; `sensor policy check FILE` shows how each rule is read"),
            ),
        }
    }
    let stats = Arc::new(Mutex::new(AttachStats::default()));
    match Attacher::new(loaded.ebpf, &config.host_root, Arc::clone(&stats)) {
        Ok(mut attacher) => {
            attacher.scan_system();
            let attach = attach_stats(&stats);
            // The same library in several places shows once, counted.
            let names = |files: Vec<&crate::bpf::attach::ProbedFile>| {
                let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
                for f in files {
                    *seen
                        .entry(format!("{} ({})", f.path, f.library))
                        .or_default() += 1;
                }
                let n: usize = seen.values().sum();
                let list = seen
                    .into_iter()
                    .map(|(name, n)| if n > 1 { format!("{name} x{n}") } else { name })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{n} file(s){}{list}", if n > 0 { ": " } else { "" })
            };
            if attach.files_probed.is_empty() {
                push(
                    &mut lines,
                    "uprobes: tls libraries",
                    Status::Warn,
                    "no OpenSSL/BoringSSL library or executable found to probe: no TLS plaintext can be seen".into(),
                    Some("install the clients' TLS libraries, or check host_root"),
                );
            } else {
                for (check, place) in [
                    ("uprobes: host", "host"),
                    ("uprobes: image layers", "image layer"),
                    ("uprobes: containers", "process root"),
                ] {
                    let files: Vec<_> = attach
                        .files_probed
                        .iter()
                        .filter(|f| f.found_in == place)
                        .collect();
                    push(&mut lines, check, Status::Pass, names(files), None);
                }
            }
            if attach.attach_failures > 0 || attach.check_failures > 0 {
                push(
                    &mut lines,
                    "uprobes: failures",
                    Status::Warn,
                    format!(
                        "{} attach and {} file check failure(s)",
                        attach.attach_failures, attach.check_failures
                    ),
                    None,
                );
            }
            attacher.detach_all();
            drop(attacher);
        }
        Err(err) => push(
            &mut lines,
            "uprobes",
            Status::Fail,
            format!("{err:#}"),
            Some("the kernel must allow uprobes (CONFIG_UPROBE_EVENTS)"),
        ),
    }
    lines
}
