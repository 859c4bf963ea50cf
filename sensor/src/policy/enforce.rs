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
//! Addresses come from the rules themselves (IP literals) and from
//! resolving their exact host names and the providers' known hosts (a
//! thread, every [`RESOLVE_EVERY`]): those hold for everyone. A DNS answer
//! a process reads holds for its own cgroup only: any process can make
//! its resolver read what it likes, and must not be able to point another
//! workload's denial at an address (a proxy, the cluster DNS). TLS server
//! names and `Host` headers are never learned from (behind a proxy they
//! name one host and go to another). An address not seen again for
//! [`ADDRESS_TTL`] is dropped.

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

/// Where an address was learned: for everyone (a rule, the sensor's own
/// resolver) or for one cgroup (a DNS answer a process of it read).
/// A process can make its own resolver read any answer it likes, so what
/// it learns only ever applies to its own cgroup.
type Scope = u64;
const GLOBAL: Scope = 0;

pub struct Enforcer {
    policy: Arc<Policy>,
    generation: u32,
    tables: Box<dyn VerdictTables + Send>,
    cgroups: HashMap<u64, Arc<Fields>>,
    cgroup_order: VecDeque<u64>,
    /// Guarded addresses by scope, and the names they go by.
    books: HashMap<Scope, BTreeMap<IpAddr, Known>>,
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
    /// Addresses whose verdicts must be rewritten, by scope.
    dirty_addrs: BTreeSet<(Scope, IpAddr)>,
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
            books: HashMap::new(),
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

    /// A new policy (SIGHUP): judged cgroups and learned addresses are
    /// kept where the new rules still care; the verdicts are rewritten
    /// and the stale ones removed at once.
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
        let old = std::mem::take(&mut self.books);
        for (scope, book) in old {
            for (ip, known) in book {
                if known.seen.is_some() && known.names.iter().any(|n| self.relevant(n)) {
                    self.books.entry(scope).or_default().insert(ip, known);
                }
            }
        }
        let global = self.books.entry(GLOBAL).or_default();
        for ip in ips {
            global.insert(
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
        self.rewrite();
    }

    /// Whether addresses of `name` are guarded: a rule names it, or its
    /// provider.
    fn relevant(&self, name: &str) -> bool {
        self.exact_names.contains(name)
            || self.globs.iter().any(|g| g.matches(name))
            || crate::provider::known_provider(name)
                .is_some_and(|p| self.providers.iter().any(|pat| pat.matches(p)))
    }

    /// A name the sensor's own resolver resolved: guarded for everyone.
    pub fn resolved(&mut self, name: &str, ip: IpAddr) {
        self.learn_in(GLOBAL, name, ip);
    }

    /// A name a process of `cgroup` resolved (a DNS answer it read) to
    /// `ip`: guarded for that cgroup only.
    pub fn learn(&mut self, cgroup: u64, name: &str, ip: IpAddr) {
        if cgroup != GLOBAL {
            self.learn_in(cgroup, name, ip);
        }
    }

    fn learn_in(&mut self, scope: Scope, name: &str, ip: IpAddr) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.relevant(&name) {
            return;
        }
        if scope != GLOBAL && !self.books.contains_key(&scope) && self.books.len() > MAX_CGROUPS {
            return;
        }
        let ip = ip.to_canonical();
        let book = self.books.entry(scope).or_default();
        if !book.contains_key(&ip) && book.len() >= MAX_ADDRESSES {
            return;
        }
        let known = book.entry(ip).or_insert_with(|| Known {
            names: BTreeSet::new(),
            seen: Some(Instant::now()),
        });
        if let Some(seen) = known.seen.as_mut() {
            *seen = Instant::now();
        }
        if known.names.insert(name) {
            self.dirty_addrs.insert((scope, ip));
        }
    }

    /// A cgroup's identity (from a process in it). Its verdicts are
    /// written before it is marked judged, so there is no gap; when a
    /// write fails it stays on the unjudged verdicts.
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
                self.forget_one(oldest);
            }
            self.cgroup_order.push_back(cgroup);
        }
        self.cgroups.insert(cgroup, identity);
        let wanted = self.verdicts_for(cgroup);
        let written = self.write_subject(cgroup, wanted);
        if written {
            if let Err(err) = self.tables.set_judged(cgroup) {
                self.write_error(&err);
            }
        } else {
            self.tables.remove_judged(cgroup);
        }
        self.stats.cgroups_judged = self.cgroups.len() as u64;
    }

    /// Forgets the cgroups no process is in any more (`live`: the cgroups
    /// of the processes the sensor knows).
    pub fn forget_cgroups_except(&mut self, live: &BTreeSet<u64>) {
        let gone: Vec<u64> = self
            .cgroup_order
            .iter()
            .copied()
            .filter(|c| !live.contains(c))
            .collect();
        for cgroup in gone {
            self.forget_one(cgroup);
        }
        self.cgroup_order.retain(|c| live.contains(c));
        self.stats.cgroups_judged = self.cgroups.len() as u64;
    }

    fn forget_one(&mut self, cgroup: u64) {
        self.cgroups.remove(&cgroup);
        self.books.remove(&cgroup);
        self.tables.remove_judged(cgroup);
        self.write_subject(cgroup, BTreeMap::new());
        self.sync_addresses();
    }

    /// Upkeep (every second): names resolved, expired addresses, and the
    /// verdicts of what changed.
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
                self.resolved(&name, ip);
            }
        }
        let mut expired = Vec::new();
        for (scope, book) in &mut self.books {
            book.retain(|ip, k| {
                let keep = k.seen.is_none_or(|s| s.elapsed() < ADDRESS_TTL);
                if !keep {
                    expired.push((*scope, *ip));
                }
                keep
            });
        }
        self.dirty_addrs.extend(expired);
        if self.dirty {
            self.rewrite();
        } else {
            for (scope, ip) in std::mem::take(&mut self.dirty_addrs) {
                self.rewrite_address(scope, ip);
            }
        }
    }

    /// The addresses guarded for `subject`: everyone's and its own.
    fn addresses_of(&self, subject: u64) -> BTreeSet<IpAddr> {
        let mut out: BTreeSet<IpAddr> = self
            .books
            .get(&GLOBAL)
            .map(|b| b.keys().copied().collect())
            .unwrap_or_default();
        if subject != GLOBAL
            && let Some(own) = self.books.get(&subject)
        {
            out.extend(own.keys().copied());
        }
        out
    }

    fn subjects(&self) -> Vec<u64> {
        std::iter::once(UNJUDGED_CGROUP)
            .chain(self.cgroup_order.iter().copied())
            .collect()
    }

    /// Writes every verdict from scratch and removes what is stale.
    pub fn rewrite(&mut self) {
        self.dirty = false;
        self.dirty_addrs.clear();
        let mut wanted: BTreeMap<PolicyKey, PolicyVerdict> = BTreeMap::new();
        for subject in self.subjects() {
            wanted.extend(self.verdicts_for(subject));
        }
        self.sync_addresses();
        // Stale verdicts go first (room in the table), then the wanted
        // ones, port exceptions before the any-port denials they except.
        let stale: Vec<PolicyKey> = self
            .written
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        self.replace_verdicts(stale, &wanted);
        self.sync_addresses();
        debug!(verdicts = self.written.len(), "policy verdicts written");
    }

    /// Writes `wanted` (exceptions first); records only what was written.
    /// Returns whether everything was.
    fn write_all(&mut self, wanted: &BTreeMap<PolicyKey, PolicyVerdict>) -> bool {
        let mut ok = true;
        let ordered = wanted
            .iter()
            .filter(|(k, _)| k.port != ANY_PORT)
            .chain(wanted.iter().filter(|(k, _)| k.port == ANY_PORT));
        let todo: Vec<(PolicyKey, PolicyVerdict)> = ordered
            .filter(|(k, v)| self.written.get(k) != Some(v))
            .map(|(k, v)| (*k, *v))
            .collect();
        for (key, verdict) in todo {
            match self.tables.set_verdict(key, verdict) {
                Ok(()) => {
                    self.written.insert(key, verdict);
                }
                Err(err) => {
                    ok = false;
                    self.write_error(&err);
                    // An exception that did not make it must not leave its
                    // any-port denial alone: drop the subject's denial for
                    // this address too.
                    let any = PolicyKey {
                        port: ANY_PORT,
                        ..key
                    };
                    if key.port != ANY_PORT && self.written.remove(&any).is_some() {
                        self.tables.remove_verdict(&any);
                    }
                }
            }
        }
        ok
    }

    /// Makes the kernel's address set the union of every scope's.
    fn sync_addresses(&mut self) {
        let addrs: BTreeSet<[u8; 16]> = self
            .books
            .values()
            .flat_map(|b| b.keys().map(|ip| addr16(*ip)))
            .collect();
        let new: Vec<[u8; 16]> = addrs.difference(&self.written_addrs).copied().collect();
        for addr in new {
            match self.tables.set_address(addr) {
                Ok(()) => {
                    self.written_addrs.insert(addr);
                }
                Err(err) => self.write_error(&err),
            }
        }
        let old: Vec<[u8; 16]> = self.written_addrs.difference(&addrs).copied().collect();
        for addr in old {
            self.tables.remove_address(&addr);
            self.written_addrs.remove(&addr);
        }
        self.stats.addresses_guarded = self.written_addrs.len() as u64;
    }

    /// Replaces the verdicts of one subject. Returns whether all were
    /// written.
    fn write_subject(&mut self, subject: u64, wanted: BTreeMap<PolicyKey, PolicyVerdict>) -> bool {
        let stale: Vec<PolicyKey> = self
            .written
            .range(subject_range(subject))
            .map(|(k, _)| *k)
            .filter(|k| !wanted.contains_key(k))
            .collect();
        self.replace_verdicts(stale, &wanted)
    }

    /// Removes `stale` (room in the table first), then writes `wanted`.
    /// Returns whether everything was written.
    fn replace_verdicts(
        &mut self,
        stale: Vec<PolicyKey>,
        wanted: &BTreeMap<PolicyKey, PolicyVerdict>,
    ) -> bool {
        for key in stale {
            self.tables.remove_verdict(&key);
            self.written.remove(&key);
        }
        let ok = self.write_all(wanted);
        self.stats.verdicts = self.written.len() as u64;
        ok
    }

    fn write_error(&mut self, err: &str) {
        self.stats.kernel_write_errors += 1;
        if self.stats.kernel_write_errors.is_power_of_two() {
            warn!(%err, count = self.stats.kernel_write_errors, "writing a policy verdict to the kernel failed");
        }
    }

    /// The verdicts of one subject over every address guarded for it.
    fn verdicts_for(&self, subject: u64) -> BTreeMap<PolicyKey, PolicyVerdict> {
        let mut out = BTreeMap::new();
        for ip in self.addresses_of(subject) {
            self.verdicts_at(subject, ip, &mut out);
        }
        out
    }

    /// The verdicts of one subject for one address (none when the address
    /// is not guarded for it).
    fn verdicts_at(&self, subject: u64, ip: IpAddr, out: &mut BTreeMap<PolicyKey, PolicyVerdict>) {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut guarded = false;
        let scopes: &[Scope] = if subject == GLOBAL {
            &[GLOBAL]
        } else {
            &[GLOBAL, subject]
        };
        for &scope in scopes {
            if let Some(known) = self.books.get(&scope).and_then(|b| b.get(&ip)) {
                guarded = true;
                names.extend(known.names.iter().cloned());
            }
        }
        if !guarded {
            return;
        }
        let identity = self
            .cgroups
            .get(&subject)
            .map(|f| IdentityFacts(Arc::clone(f)));
        let identity: Option<&dyn Facts> = identity.as_ref().map(|f| f as &dyn Facts);
        let mut conn = Connection {
            ip,
            names: names.into_iter().collect(),
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
    /// in one scope: everyone's for the global scope, one cgroup's else.
    fn rewrite_address(&mut self, scope: Scope, ip: IpAddr) {
        let addr = addr16(ip);
        let subjects = if scope == GLOBAL {
            self.subjects()
        } else if self.cgroups.contains_key(&scope) {
            vec![scope]
        } else {
            // Not judged yet: its verdicts are written when it is.
            Vec::new()
        };
        let mut wanted = BTreeMap::new();
        for subject in &subjects {
            self.verdicts_at(*subject, ip, &mut wanted);
        }
        self.sync_addresses();
        let stale: Vec<PolicyKey> = self
            .written
            .keys()
            .filter(|k| {
                k.addr == addr && subjects.contains(&k.cgroup_id) && !wanted.contains_key(k)
            })
            .copied()
            .collect();
        self.replace_verdicts(stale, &wanted);
        self.sync_addresses();
    }

    fn verdict(&self, deny: bool, rule: usize) -> PolicyVerdict {
        PolicyVerdict {
            deny: u32::from(deny),
            rule: rule as u32,
            generation: self.generation,
            _pad: 0,
        }
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
