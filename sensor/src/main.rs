//! `sensor`: the eBPF host sensor daemon. Events go to the configured sinks
//! (stdout as JSON lines by default), logs to stderr. `sensor verify`
//! checks output files' hash chains.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sensor::config::Config;

#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "eBPF sensor that attributes model API calls to the real actor",
    after_help = CONFIG_KEYS
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML). Default: /etc/sensor/sensor.toml when it exists.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// `host.name` on every event (default: the hostname).
    #[arg(long)]
    host_name: Option<String>,
    /// Ring buffer size in bytes (power of two).
    #[arg(long)]
    ring_buffer_bytes: Option<u32>,
    /// Milliseconds between ring buffer drains (0: a wakeup per record).
    #[arg(long)]
    ring_buffer_poll_ms: Option<u64>,
    /// HMAC key file for credential fingerprints (created when missing).
    #[arg(long, global = true)]
    fingerprint_key_file: Option<PathBuf>,
    /// Comma-separated `event.action`s to emit (default: all).
    #[arg(long, value_delimiter = ',')]
    events: Option<Vec<String>>,
    /// Seconds between `sensor_health` events.
    #[arg(long)]
    health_interval_secs: Option<u64>,
    /// `k8s.node.name` (default: $NODE_NAME or $K8S_NODE_NAME).
    #[arg(long)]
    node_name: Option<String>,
    /// Trust domain of derived SPIFFE IDs (default cluster.local).
    #[arg(long)]
    spiffe_trust_domain: Option<String>,
    /// The node's root as the sensor sees it; runtime state is read below.
    #[arg(long, global = true)]
    host_root: Option<PathBuf>,
    /// Window in seconds for reporting a credential shared by actors.
    #[arg(long)]
    credential_share_window_secs: Option<u64>,
    /// HMAC key of the outputs' hash chains (created when missing).
    #[arg(long, global = true)]
    integrity_key_file: Option<PathBuf>,
    /// Directory of the network sinks' spools.
    #[arg(long, global = true)]
    spool_dir: Option<PathBuf>,
    /// Policy file (TOML); see the README's Policy section.
    #[arg(long)]
    policy_file: Option<PathBuf>,
    /// Log filter for stderr (tracing syntax), e.g. `info`, `sensor=debug`.
    #[arg(long, env = "SENSOR_LOG", default_value = "info")]
    log: String,
}

/// Every key of the config file, with its default (the README has the
/// details and an example of each sink).
const CONFIG_KEYS: &str = "\
Config file keys (TOML; flags above override them):
  host_name = <hostname>            ring_buffer_bytes = 16777216
  ring_buffer_poll_ms = 5           fingerprint_key_file = \"/var/lib/sensor/fingerprint.key\"
  events = [all actions]            health_interval_secs = 60
  body_capture_bytes = 262144       node_name = $NODE_NAME
  spiffe_trust_domain = \"cluster.local\"   spiffe_svid_paths = [...]
  host_root = \"/\"                   credential_share_window_secs = 3600
  integrity_key_file = \"/var/lib/sensor/integrity.key\"
  spool_dir = \"/var/lib/sensor/spool\"  metrics_address = off (e.g. \"127.0.0.1:9464\")
  policy_file = off (e.g. \"/etc/sensor/policy.toml\")
  [[sinks]] name, type = stdout|file|syslog|http, format = native|ocsf, events
    file:   path, rotate_bytes = 104857600, rotate_secs, retain = 10,
            fsync = never|batch|record (batch)
    syslog: address, transport = udp|tcp|tls, app_name = \"sensor\",
            facility = local0, ca_file, server_name
    http:   url, api = splunk_hec|elasticsearch|ndjson, index, token_file,
            headers, headers_file, gzip = false, batch_max_events = 500,
            batch_max_bytes = 4194304, batch_max_delay_ms = 1000, ca_file,
            server_name
    syslog and http: timeout_secs = 10, spool_max_bytes = 268435456,
            retry_initial_ms = 500, retry_max_ms = 30000, queue_events = 65536
Signals: SIGTERM/SIGINT stop cleanly (checkpoint, spool); SIGHUP reopens
files and reloads the `events` filters and the policy file.";

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Checks the hash chain of output files (give rotated files oldest
    /// first, e.g. `events.jsonl.* events.jsonl`): reports each gap,
    /// reorder, broken link and, with the integrity key, altered record.
    /// Exit status 0 when the chain is whole, 1 when not, 2 on bad usage.
    Verify {
        /// The integrity key (default: `integrity_key_file` of the config,
        /// when readable). Without it, hashes are not checked.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Preflight: reports line by line, with a fix for each problem, what
    /// this host offers the sensor (kernel, BTF, capabilities, tracefs,
    /// cgroups, container runtimes, keys, sinks), then loads and attaches
    /// the kernel programs and TLS probes for real and detaches them.
    /// Exit status 0 when the sensor can run here, 1 when not.
    Check {
        /// Print the lines as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Policy tools: `policy test` (dry run on recorded events) and
    /// `policy check` (how a policy file is read).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Prints one agent session's chain from output files, in order: who
    /// started it, its model calls and the tools they asked for, the tool
    /// and MCP calls that followed (each with the model call it answers),
    /// connections, processes and their exits. Exit status 1 when the
    /// session has no event in the files.
    Timeline {
        /// The `agent.session.id`.
        #[arg(long)]
        session: String,
        /// The session's events as JSON lines instead of text.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum PolicyCommand {
    /// Replays recorded events (the sensor's JSON lines) through POLICY
    /// and prints what it decides for each model call, tool call and
    /// connect, next to what was recorded, then a count per rule. Exit
    /// status 0; 2 when the policy is invalid.
    Test {
        /// The policy file to try.
        policy: PathBuf,
        /// Event files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// One JSON object per judged event, no summary.
        #[arg(long)]
        json: bool,
    },
    /// Checks a policy file: prints its rules as understood, or the first
    /// invalid rule and why (exit status 2).
    Check { policy: PathBuf },
}

fn main() {
    // The error chain, one line, no backtrace: what went wrong and why.
    if let Err(err) = run() {
        eprintln!("sensor: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .init();
    if let Some(Command::Timeline {
        session,
        json,
        files,
    }) = &cli.command
    {
        let (events, _bad) = sensor::timeline::collect(files, session)?;
        let mut out = std::io::stdout().lock();
        sensor::timeline::print(&mut out, session, &events, *json)?;
        std::process::exit(if events.is_empty() { 1 } else { 0 });
    }
    if let Some(Command::Policy(command)) = &cli.command {
        policy_command(command)?;
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(Command::Verify {
        key_file,
        json,
        files,
    }) = cli.command.clone()
    {
        let key_path = key_file
            .clone()
            .or(cli.integrity_key_file.clone())
            .unwrap_or_else(|| config.integrity_key_file.clone());
        let key = match std::fs::read(&key_path) {
            Ok(key) => Some(key),
            Err(err) if key_file.is_some() => {
                eprintln!(
                    "sensor: error: reading the key {}: {err}",
                    key_path.display()
                );
                std::process::exit(2);
            }
            Err(_) => None,
        };
        let report = sensor::sink::verify::verify_files(&files, key.as_deref());
        print_report(&report, json)?;
        std::process::exit(if report.problems.is_empty() { 0 } else { 1 });
    }
    apply_flags(&mut config, &cli);
    if let Some(Command::Check { json }) = cli.command {
        config.validate()?;
        let lines = sensor::daemon::check(&config);
        print_check(&lines, json)?;
        std::process::exit(if sensor::check::passed(&lines) { 0 } else { 1 });
    }
    // SIGHUP reads the file again, with the same flags on top.
    let reload_cli = cli.clone();
    let reload = move || -> anyhow::Result<Config> {
        let mut config = Config::load(reload_cli.config.as_deref())?;
        apply_flags(&mut config, &reload_cli);
        config.validate()?;
        Ok(config)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(sensor::daemon::run(config, Box::new(reload)))
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn policy_command(command: &PolicyCommand) -> anyhow::Result<()> {
    let path = match command {
        PolicyCommand::Test { policy, .. } | PolicyCommand::Check { policy } => policy,
    };
    let policy = match sensor::policy::Policy::load(path) {
        Ok(policy) => policy,
        Err(err) => {
            eprintln!("sensor: error: {err}");
            std::process::exit(2);
        }
    };
    match command {
        PolicyCommand::Test { files, json, .. } => {
            let mut out = std::io::stdout().lock();
            sensor::policy::dryrun::replay(&policy, files, *json, &mut out)?;
        }
        PolicyCommand::Check { .. } => {
            println!(
                "policy {} (version {}): {} rule(s), default {}",
                path.display(),
                policy.version,
                policy.rules.len(),
                policy.default.as_str()
            );
            for (i, rule) in policy.rules.iter().enumerate() {
                println!(
                    "#{:<3} {:<32} {:<5} {}",
                    i + 1,
                    rule.id,
                    rule.action.as_str(),
                    if rule.kernel_enforced() {
                        "enforced in the kernel at connect"
                    } else if rule.enforce {
                        "enforce asked, but request terms make it alert-only"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    std::process::exit(0);
}

/// Command-line flags win over the file.
fn apply_flags(config: &mut Config, cli: &Cli) {
    if let Some(v) = cli.host_name.clone() {
        config.host_name = Some(v);
    }
    if let Some(v) = cli.ring_buffer_bytes {
        config.ring_buffer_bytes = v;
    }
    if let Some(v) = cli.ring_buffer_poll_ms {
        config.ring_buffer_poll_ms = v;
    }
    if let Some(v) = cli.fingerprint_key_file.clone() {
        config.fingerprint_key_file = v;
    }
    if let Some(v) = cli.events.clone() {
        config.events = v;
    }
    if let Some(v) = cli.health_interval_secs {
        config.health_interval_secs = v;
    }
    if let Some(v) = cli.node_name.clone() {
        config.node_name = Some(v);
    }
    if let Some(v) = cli.spiffe_trust_domain.clone() {
        config.spiffe_trust_domain = v;
    }
    if let Some(v) = cli.host_root.clone() {
        config.host_root = v;
    }
    if let Some(v) = cli.integrity_key_file.clone() {
        config.integrity_key_file = v;
    }
    if let Some(v) = cli.spool_dir.clone() {
        config.spool_dir = v;
    }
    if let Some(v) = cli.credential_share_window_secs {
        config.credential_share_window_secs = v;
    }
    if let Some(v) = cli.policy_file.clone() {
        config.policy_file = Some(v);
    }
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn print_report(report: &sensor::sink::verify::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{} records, {} chain start(s), {} checkpoint(s), {}; hashes {}; {}",
        report.records,
        report.chains,
        report.checkpoints,
        if report.ends_with_checkpoint {
            "ends with a checkpoint (clean stop)"
        } else {
            "no checkpoint at the end (running, or not stopped cleanly)"
        },
        if report.keyed {
            "checked"
        } else {
            "NOT checked (no key)"
        },
        match report.problems.first() {
            None => "chain intact".to_owned(),
            Some(first) => format!("FIRST PROBLEM at {}", first.at),
        }
    );
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn print_check(lines: &[sensor::check::Line], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(lines)?);
        return Ok(());
    }
    for line in lines {
        println!("{line}");
    }
    println!(
        "{}",
        if sensor::check::passed(lines) {
            "the sensor can run on this host"
        } else {
            "the sensor CANNOT run on this host: see FAIL above"
        }
    );
    Ok(())
}
