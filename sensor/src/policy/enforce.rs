//! Kernel verdicts from a policy: for every cgroup the sensor has judged
//! (and for the cgroups it has not judged yet) and every address of a
//! destination some enforced rule denies, whether a connect is refused.
//!
//! A verdict is written only where it is certain: rules are walked in
//! order with three-valued matching (a term the kernel cannot see at
//! connect, like the model or the executable, may or may not match), and
//! a connect is refused only when, whichever way those terms turn out, the
//! first matching rule is an enforced `deny`. Otherwise the connect goes
//! through and the events report the decision: traffic no rule denies is
//! never broken.
//!
//! Addresses come from the rules themselves (IP literals), from resolving
//! their exact host names and the providers' known hosts (a thread, every
//! [`RESOLVE_EVERY`]), and from what processes on the host learn: DNS
//! answers, TLS server names, model call destinations. An address not
//! seen again for [`ADDRESS_TTL`] is dropped.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::{IpAddr, ToSocketAddrs},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use sensor_common::policy::{ANY_PORT, PolicyKey, PolicyVerdict, UNJUDGED_CGROUP, v4_mapped};
use tracing::{debug, warn};

use super::{
    Facts, Pattern, Policy,
    rules::{Connection, Tri},
};
use crate::event::Fields;

/// How often the rules' host names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(60);
/// An address not confirmed for this long stops being guarded.
pub const ADDRESS_TTL: Duration = Duration::from_secs(3600);
/// Cgroups remembered at most; the oldest go back to the unjudged
/// verdicts past it.
const MAX_CGROUPS: usize = 16_384;
/// Guarded addresses at most.
const MAX_ADDRESSES: usize = 4096;

/// The kernel's verdict tables (or a stand-in in tests).
pub trait VerdictTables {
    fn set_verdict(&mut self, key: PolicyKey, verdict: PolicyVerdict) -> Result<(), String>;
    fn remove_verdict(&mut self, key: &PolicyKey);
    fn set_address(&mut self, addr: [u8; 16]) -> Result<(), String>;
    fn remove_address(&mut self, addr: &[u8; 16]);
    fn set_judged(&mut self, cgroup: u64) -> Result<(), String>;
    fn remove_judged(&mut self, cgroup: u64);
}

/// Fields of a cgroup's identity, as facts.
struct IdentityFacts(Arc<Fields>);

impl Facts for IdentityFacts {
    fn fact(&self, path: &str) -> Option<&serde_json::Value> {
        self.0
            .iter()
            .rev()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct EnforceStats {
    pub cgroups_judged: u64,
    pub addresses_guarded: u64,
    pub verdicts: u64,
    pub kernel_write_errors: u64,
    pub names_resolved: u64,
    pub resolve_failures: u64,
}

struct Known {
    names: BTreeSet<String>,
    /// None: named by a rule, never expires.
    seen: Option<Instant>,
}

pub struct Enforcer {
    policy: Arc<Policy>,
    generation: u32,
    tables: Box<dyn VerdictTables + Send>,
    cgroups: HashMap<u64, Arc<Fields>>,
    cgroup_order: VecDeque<u64>,
    /// Guarded addresses and the names they go by.
    book: BTreeMap<IpAddr, Known>,
    written: BTreeMap<PolicyKey, PolicyVerdict>,
    written_addrs: BTreeSet<[u8; 16]>,
    exact_names: BTreeSet<String>,
    globs: Vec<Pattern>,
    providers: Vec<Pattern>,
    resolved: Option<mpsc::Receiver<(String, Vec<IpAddr>)>>,
    resolve: bool,
    /// Every port a rule names (verdicts per port where they differ).
    ports: BTreeSet<u16>,
    /// Everything must be rewritten (a new policy).
    dirty: bool,
    /// Addresses whose verdicts must be rewritten.
    dirty_addrs: BTreeSet<IpAddr>,
    pub stats: EnforceStats,
}

impl Enforcer {
    /// Starts enforcing `policy` through `tables` (empty). `resolve`
    /// starts the thread that resolves the rules' host names.
    pub fn new(policy: Arc<Policy>, tables: Box<dyn VerdictTables + Send>, resolve: bool) -> Self {
        let mut enforcer = Self {
            policy: Arc::clone(&policy),
            generation: 0,
            tables,
            cgroups: HashMap::new(),
            cgroup_order: VecDeque::new(),
            book: BTreeMap::new(),
            written: BTreeMap::new(),
            written_addrs: BTreeSet::new(),
            exact_names: BTreeSet::new(),
            globs: Vec::new(),
            providers: Vec::new(),
            resolved: None,
            resolve,
            ports: BTreeSet::new(),
            dirty: true,
            dirty_addrs: BTreeSet::new(),
            stats: EnforceStats::default(),
        };
        enforcer.set_policy(policy);
        enforcer
    }

    /// The generation the verdicts carry (bumped at each policy).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The policy of `generation`, for a block record.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// A new policy (SIGHUP): judged cgroups and learned addresses are
    /// kept where the new rules still care; the next [`Enforcer::tick`]
    /// rewrites the verdicts and removes the stale ones.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        let mut exact_names = BTreeSet::new();
        let mut ips = Vec::new();
        let mut globs = Vec::new();
        let mut providers = Vec::new();
        for rule in policy.rules.iter().filter(|r| r.kernel_enforced()) {
            let (names, rule_ips, rule_globs, rule_providers) = rule.destinations();
            exact_names.extend(names);
            ips.extend(rule_ips);
            globs.extend(rule_globs);
            providers.extend(rule_providers);
        }
        for host in crate::provider::KNOWN_HOSTS {
            if crate::provider::known_provider(host)
                .is_some_and(|p| providers.iter().any(|pat| pat.matches(p)))
            {
                exact_names.insert(host.to_owned());
            }
        }
        self.ports = policy.rules.iter().flat_map(|r| r.ports()).collect();
        self.policy = policy;
        self.generation = self.generation.wrapping_add(1);
        self.exact_names = exact_names;
        self.globs = globs;
        self.providers = providers;
        let old = std::mem::take(&mut self.book);
        for (ip, known) in old {
            if known.seen.is_some() && self.relevant_names(&known.names) {
                self.book.insert(ip, known);
            }
        }
        for ip in ips {
            self.book.insert(
                ip.to_canonical(),
                Known {
                    names: BTreeSet::new(),
                    seen: None,
                },
            );
        }
        // Dropping the old receiver ends the old resolver thread.
        self.resolved = (self.resolve && !self.exact_names.is_empty())
            .then(|| spawn_resolver(self.exact_names.iter().cloned().collect()));
        self.dirty = true;
        self.rewrite();
    }

    fn relevant_names(&self, names: &BTreeSet<String>) -> bool {
        names.iter().any(|n| self.relevant(n))
    }

    /// Whether addresses of `name` are guarded: a rule names it, or its
    /// provider.
    fn relevant(&self, name: &str) -> bool {
        self.exact_names.contains(name)
            || self.globs.iter().any(|g| g.matches(name))
            || crate::provider::known_provider(name)
                .is_some_and(|p| self.providers.iter().any(|pat| pat.matches(p)))
    }

    /// A name the host resolved (DNS answer, TLS server name, model call
    /// destination) and an address it goes to.
    pub fn learn(&mut self, name: &str, ip: IpAddr) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.relevant(&name) {
            return;
        }
        let ip = ip.to_canonical();
        if !self.book.contains_key(&ip) && self.book.len() >= MAX_ADDRESSES {
            return;
        }
        let known = self.book.entry(ip).or_insert_with(|| Known {
            names: BTreeSet::new(),
            seen: Some(Instant::now()),
        });
        if let Some(seen) = known.seen.as_mut() {
            *seen = Instant::now();
        }
        if known.names.insert(name) {
            self.dirty_addrs.insert(ip);
        }
    }

    /// A cgroup's identity (from a process in it). Its verdicts are
    /// written before it is marked judged, so there is no gap.
    pub fn judge_cgroup(&mut self, cgroup: u64, identity: Arc<Fields>) {
        if cgroup == UNJUDGED_CGROUP {
            return;
        }
        if let Some(old) = self.cgroups.get(&cgroup)
            && (**old) == *identity
        {
            return;
        }
        if !self.cgroups.contains_key(&cgroup) {
            if self.cgroup_order.len() >= MAX_CGROUPS
                && let Some(oldest) = self.cgroup_order.pop_front()
            {
                self.cgroups.remove(&oldest);
                self.tables.remove_judged(oldest);
                self.write_subject(oldest, BTreeMap::new());
            }
            self.cgroup_order.push_back(cgroup);
        }
        self.cgroups.insert(cgroup, identity);
        let wanted = self.verdicts_for(cgroup);
        self.write_subject(cgroup, wanted);
        if let Err(err) = self.tables.set_judged(cgroup) {
            self.write_error(&err);
        }
        self.stats.cgroups_judged = self.cgroups.len() as u64;
    }

    /// Upkeep (every second): names resolved, expired addresses, and a
    /// full rewrite when something changed.
    pub fn tick(&mut self) {
        let mut got = Vec::new();
        if let Some(rx) = &self.resolved {
            got.extend(rx.try_iter());
        }
        for (name, ips) in got {
            if ips.is_empty() {
                self.stats.resolve_failures += 1;
                continue;
            }
            self.stats.names_resolved += 1;
            for ip in ips {
                self.learn(&name, ip);
            }
        }
        let expired: Vec<IpAddr> = self
            .book
            .iter()
            .filter(|(_, k)| k.seen.is_some_and(|s| s.elapsed() >= ADDRESS_TTL))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in expired {
            self.book.remove(&ip);
            self.dirty_addrs.insert(ip);
        }
        if self.dirty {
            self.rewrite();
        } else {
            for ip in std::mem::take(&mut self.dirty_addrs) {
                self.rewrite_address(ip);
            }
        }
    }

    /// Writes every verdict from scratch and removes what is stale.
    pub fn rewrite(&mut self) {
        self.dirty = false;
        self.dirty_addrs.clear();
        let mut wanted: BTreeMap<PolicyKey, PolicyVerdict> = BTreeMap::new();
        let subjects: Vec<u64> = std::iter::once(UNJUDGED_CGROUP)
            .chain(self.cgroup_order.iter().copied())
            .collect();
        for subject in subjects {
            wanted.extend(self.verdicts_for(subject));
        }
        let addrs: BTreeSet<[u8; 16]> = self.book.keys().map(|ip| addr16(*ip)).collect();
        // New addresses and verdicts first, then the stale ones go.
        let new_addrs: Vec<[u8; 16]> = addrs.difference(&self.written_addrs).copied().collect();
        for addr in new_addrs {
            if let Err(err) = self.tables.set_address(addr) {
                self.write_error(&err);
            }
        }
        let changed: Vec<(PolicyKey, PolicyVerdict)> = wanted
            .iter()
            .filter(|(k, v)| self.written.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (key, verdict) in changed {
            if let Err(err) = self.tables.set_verdict(key, verdict) {
                self.write_error(&err);
            }
        }
        for key in self.written.keys() {
            if !wanted.contains_key(key) {
                self.tables.remove_verdict(key);
            }
        }
        for addr in self.written_addrs.difference(&addrs) {
            self.tables.remove_address(addr);
        }
        self.written = wanted;
        self.written_addrs = addrs;
        self.stats.addresses_guarded = self.book.len() as u64;
        self.stats.verdicts = self.written.len() as u64;
        debug!(
            verdicts = self.written.len(),
            addresses = self.book.len(),
            "policy verdicts written"
        );
    }

    /// Replaces the verdicts of one subject.
    fn write_subject(&mut self, subject: u64, wanted: BTreeMap<PolicyKey, PolicyVerdict>) {
        let stale: Vec<PolicyKey> = self
            .written
            .range(subject_range(subject))
            .map(|(k, _)| *k)
            .filter(|k| !wanted.contains_key(k))
            .collect();
        for (key, verdict) in wanted {
            if self.written.get(&key) != Some(&verdict) {
                if let Err(err) = self.tables.set_verdict(key, verdict) {
                    self.write_error(&err);
                    continue;
                }
                self.written.insert(key, verdict);
            }
        }
        for key in stale {
            self.tables.remove_verdict(&key);
            self.written.remove(&key);
        }
        self.stats.verdicts = self.written.len() as u64;
    }

    fn write_error(&mut self, err: &str) {
        self.stats.kernel_write_errors += 1;
        if self.stats.kernel_write_errors.is_power_of_two() {
            warn!(%err, count = self.stats.kernel_write_errors, "writing a policy verdict to the kernel failed");
        }
    }

    /// The verdicts of one subject over every guarded address.
    fn verdicts_for(&self, subject: u64) -> BTreeMap<PolicyKey, PolicyVerdict> {
        let mut out = BTreeMap::new();
        for ip in self.book.keys() {
            self.verdicts_at(subject, *ip, &mut out);
        }
        out
    }

    /// The verdicts of one subject for one guarded address (none when the
    /// address is not guarded).
    fn verdicts_at(&self, subject: u64, ip: IpAddr, out: &mut BTreeMap<PolicyKey, PolicyVerdict>) {
        let Some(known) = self.book.get(&ip) else {
            return;
        };
        let identity = self
            .cgroups
            .get(&subject)
            .map(|f| IdentityFacts(Arc::clone(f)));
        let identity: Option<&dyn Facts> = identity.as_ref().map(|f| f as &dyn Facts);
        let mut conn = Connection {
            ip,
            names: known.names.iter().cloned().collect(),
            port: None,
        };
        let key = |port| PolicyKey {
            cgroup_id: subject,
            addr: addr16(ip),
            port,
            _pad: [0; 6],
        };
        let any = judge_connection(&self.policy, identity, &conn);
        if let Some(rule) = any {
            out.insert(key(ANY_PORT), self.verdict(true, rule));
        }
        for port in &self.ports {
            conn.port = Some(*port);
            let this = judge_connection(&self.policy, identity, &conn);
            if this != any {
                out.insert(
                    key(*port),
                    match this {
                        Some(rule) => self.verdict(true, rule),
                        None => self.verdict(false, 0),
                    },
                );
            }
        }
    }

    /// Rewrites the verdicts of one address (learned, renamed or expired)
    /// for every subject: far cheaper than [`Enforcer::rewrite`] when
    /// DNS answers bring new addresses.
    fn rewrite_address(&mut self, ip: IpAddr) {
        let addr = addr16(ip);
        let mut wanted = BTreeMap::new();
        for subject in std::iter::once(UNJUDGED_CGROUP).chain(self.cgroup_order.iter().copied()) {
            self.verdicts_at(subject, ip, &mut wanted);
        }
        let guarded = self.book.contains_key(&ip);
        if guarded
            && self.written_addrs.insert(addr)
            && let Err(err) = self.tables.set_address(addr)
        {
            self.write_error(&err);
        }
        for (key, verdict) in &wanted {
            if self.written.get(key) != Some(verdict) {
                match self.tables.set_verdict(*key, *verdict) {
                    Ok(()) => {
                        self.written.insert(*key, *verdict);
                    }
                    Err(err) => self.write_error(&err),
                }
            }
        }
        let stale: Vec<PolicyKey> = self
            .written
            .keys()
            .filter(|k| k.addr == addr && !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            self.tables.remove_verdict(&key);
            self.written.remove(&key);
        }
        if !guarded && self.written_addrs.remove(&addr) {
            self.tables.remove_address(&addr);
        }
        self.stats.addresses_guarded = self.book.len() as u64;
        self.stats.verdicts = self.written.len() as u64;
    }

    fn verdict(&self, deny: bool, rule: usize) -> PolicyVerdict {
        PolicyVerdict {
            deny: u32::from(deny),
            rule: rule as u32,
            generation: self.generation,
            _pad: 0,
        }
    }

    /// Removes every verdict, address and judged mark this enforcer
    /// wrote (a policy without enforced rules replaced it, or a stop).
    pub fn clear(&mut self) {
        for key in self.written.keys() {
            self.tables.remove_verdict(key);
        }
        for addr in &self.written_addrs {
            self.tables.remove_address(addr);
        }
        for cgroup in &self.cgroup_order {
            self.tables.remove_judged(*cgroup);
        }
        self.written.clear();
        self.written_addrs.clear();
    }
}

/// The rule whose `deny` the kernel carries out for this connection, if
/// certain; `None` lets it through.
pub fn judge_connection(
    policy: &Policy,
    identity: Option<&dyn Facts>,
    conn: &Connection,
) -> Option<usize> {
    let mut deny_if_maybe: Option<usize> = None;
    for (index, rule) in policy.rules.iter().enumerate() {
        let kernel_deny = rule.kernel_enforced();
        match rule.matches_connection(identity, conn) {
            Tri::No => {}
            Tri::Yes => {
                return if kernel_deny {
                    Some(deny_if_maybe.unwrap_or(index))
                } else {
                    None
                };
            }
            Tri::Maybe => {
                if !kernel_deny {
                    // Some actor or request this rule lets through.
                    return None;
                }
                deny_if_maybe.get_or_insert(index);
            }
        }
    }
    // The default is never enforced in the kernel.
    None
}

fn subject_range(subject: u64) -> std::ops::RangeInclusive<PolicyKey> {
    PolicyKey {
        cgroup_id: subject,
        addr: [0; 16],
        port: 0,
        _pad: [0; 6],
    }..=PolicyKey {
        cgroup_id: subject,
        addr: [0xff; 16],
        port: u16::MAX,
        _pad: [0xff; 6],
    }
}

pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Resolves `names` now and every [`RESOLVE_EVERY`] on a thread of its
/// own (the system resolver blocks); ends when the receiver is dropped.
fn spawn_resolver(names: Vec<String>) -> mpsc::Receiver<(String, Vec<IpAddr>)> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("policy-resolver".into())
        .spawn(move || {
            loop {
                for name in &names {
                    let ips: Vec<IpAddr> = match (name.as_str(), 443).to_socket_addrs() {
                        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                        Err(err) => {
                            debug!(%name, %err, "resolving a policy host failed");
                            Vec::new()
                        }
                    };
                    if tx.send((name.clone(), ips)).is_err() {
                        return;
                    }
                }
                std::thread::sleep(RESOLVE_EVERY);
            }
        });
    if let Err(err) = spawned {
        warn!(%err, "starting the policy resolver thread failed: rule host names are learned only from traffic");
    }
    rx
}
