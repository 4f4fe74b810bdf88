//! Where a run's listing splits: the boundaries that cut a shard's remaining key range into
//! pieces listed at once, and how a shard hands its numbers and ranges to the children it
//! splits off (decisions 120).
//!
//! S3 can neither count the keys in a range nor stop a listing at an end key, so boundaries
//! are guessed from a few cheap probes: one delimiter LIST names the folders where keys have
//! them; elsewhere one LIST of one key per distinct next character finds the groups of keys
//! sharing a longer prefix, breadth first, within a probe budget. A boundary only shapes the
//! balance: the pieces partition the range whatever the boundaries are, so a poor guess
//! costs time, never a key.

use crate::aws::s3::S3Source;
use crate::error::Result;
use crate::state::runs::listing::ListerState;

/// How deep the folder and character probes go before giving up on finding more groups.
const MAX_DEPTH: usize = 8;

/// The listing requests a probe may make.
#[async_trait::async_trait]
pub trait KeyProbe: Send + Sync {
    /// The first key under `prefix` after `after` (S3 order).
    async fn first_key_after(&self, prefix: &str, after: Option<&str>) -> Result<Option<String>>;
    /// The folders (common prefixes at the next `/`) under `prefix` after `after`: one page.
    async fn folders_after(&self, prefix: &str, after: Option<&str>) -> Result<Vec<String>>;
}

/// A bucket as probed through S3.
pub struct S3Probe<'a> {
    /// The client.
    pub s3: &'a S3Source,
    /// The bucket.
    pub bucket: &'a str,
}

#[async_trait::async_trait]
impl KeyProbe for S3Probe<'_> {
    async fn first_key_after(&self, prefix: &str, after: Option<&str>) -> Result<Option<String>> {
        self.s3.first_key_after(self.bucket, prefix, after).await
    }

    async fn folders_after(&self, prefix: &str, after: Option<&str>) -> Result<Vec<String>> {
        self.s3.folders_after(self.bucket, prefix, after).await
    }
}

/// S3 orders keys by their UTF-8 bytes, as `[u8]` compares.
fn gt(a: &str, b: &str) -> bool {
    a.as_bytes() > b.as_bytes()
}

/// A StartAfter past every key that starts with `group` (but keys continuing with the
/// largest code point itself, which only shifts the balance).
fn past_group(group: &str) -> String {
    format!("{group}\u{10FFFF}")
}

/// Up to `pieces - 1` boundaries, strictly increasing and strictly inside `(after, until)`,
/// that cut the keys under `prefix` in `(after, until]` into about equal groups of folders
/// or key prefixes. Empty when the range shows fewer than two groups within the budget.
pub async fn boundaries(
    probe: &dyn KeyProbe,
    prefix: &str,
    after: Option<&str>,
    until: Option<&str>,
    pieces: usize,
) -> Result<Vec<String>> {
    if pieces < 2 {
        return Ok(Vec::new());
    }
    let in_range = |g: &str| after.is_none_or(|a| gt(g, a)) && until.is_none_or(|u| gt(u, g));
    // Folders first: one request names up to a page of them.
    let mut at = prefix.to_string();
    let mut groups: Vec<String> = Vec::new();
    for _ in 0..MAX_DEPTH {
        let folders: Vec<String> = probe
            .folders_after(&at, after)
            .await?
            .into_iter()
            .filter(|f| in_range(f) || after.is_some_and(|a| a.starts_with(f.as_str())))
            .collect();
        match folders.len() {
            0 => break,
            1 => at = folders.into_iter().next().expect("one folder"),
            _ => {
                groups = folders;
                break;
            }
        }
    }
    if groups.len() < 2 {
        groups = by_next_character(probe, &at, after, until, pieces).await?;
    }
    // Groups past the range are not the shard's; the first group may hold `after` itself,
    // and is never a boundary (see `spread`).
    let groups: Vec<String> = groups.into_iter().filter(|g| until.is_none_or(|u| gt(u, g))).collect();
    Ok(spread(&groups, pieces).into_iter().filter(|g| in_range(g)).collect())
}

/// Groups of keys sharing a longer prefix than `at`, one character deeper a level, breadth
/// first, until there are `pieces` of them or the probe budget is spent.
async fn by_next_character(
    probe: &dyn KeyProbe,
    at: &str,
    after: Option<&str>,
    until: Option<&str>,
    pieces: usize,
) -> Result<Vec<String>> {
    let budget = 4 * pieces + 8;
    let mut probes = 0;
    let mut frontier = vec![at.to_string()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for g in &frontier {
            if probes >= budget {
                next.push(g.clone());
                continue;
            }
            // The keys of group `g` in range: from past `after` when it is inside the group.
            let mut start = match after {
                Some(a) if gt(a, g) => a.to_string(),
                _ => g.clone(),
            };
            let before = next.len();
            while probes < budget {
                probes += 1;
                let Some(key) = probe.first_key_after(g, Some(&start)).await? else {
                    break;
                };
                if until.is_some_and(|u| gt(&key, u)) {
                    break;
                }
                let Some(c) = key[g.len()..].chars().next() else {
                    break;
                };
                let child = format!("{g}{c}");
                start = past_group(&child);
                next.push(child);
            }
            if next.len() == before {
                // Nothing found under it within the range or the budget: keep it as it is.
                next.push(g.clone());
            }
        }
        frontier = next;
        if frontier.len() >= pieces || probes >= budget {
            break;
        }
    }
    Ok(frontier)
}

/// `pieces - 1` of `groups` (sorted) that cut them into about equal runs; the first group is
/// never a boundary, since the keys before it are the shard's own.
fn spread(groups: &[String], pieces: usize) -> Vec<String> {
    let n = groups.len();
    if n < 2 {
        return Vec::new();
    }
    let parts = pieces.min(n);
    let mut out: Vec<String> = (1..parts).map(|j| groups[j * n / parts].clone()).collect();
    out.dedup();
    out
}

/// Splits shard `l` at `boundaries` (increasing, inside its range): `l` keeps its range up to
/// the first, and each boundary starts a child up to the next one (the last up to `l`'s old
/// end). The shard numbers `l` owns are shared out as evenly as the pieces allow, so a child
/// that stays large can split again. Returns the children, to be saved with `l`.
pub fn divide(l: &mut ListerState, boundaries: &[String]) -> Vec<ListerState> {
    let parts = boundaries.len().min(l.spare as usize) + 1;
    if parts < 2 {
        return Vec::new();
    }
    let boundaries = &boundaries[..parts - 1];
    let numbers = l.spare + 1;
    let share = |j: u32| numbers / parts as u32 + u32::from(j < numbers % parts as u32);
    let mut children = Vec::with_capacity(parts - 1);
    let mut next = l.shard + share(0);
    for (j, b) in boundaries.iter().enumerate() {
        let j = j as u32 + 1;
        let until = boundaries.get(j as usize).cloned().or_else(|| l.until.clone());
        children.push(ListerState::child(next, b.clone(), until, share(j) - 1));
        next += share(j);
    }
    l.until = Some(boundaries[0].clone());
    l.spare = share(0) - 1;
    l.born = children.iter().map(|c| c.shard).collect();
    children
}

/// Whether a shard with numbers to spare tries to split after page `page`: after its first
/// page, and again each time its page count doubles while it stays large, so a range with no
/// visible groups costs a few probes, not some per page.
pub fn tries_split_after(page: u64) -> bool {
    page.is_power_of_two() || page == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A bucket's keys in memory, answering the probes as S3 does (byte order, StartAfter
    /// exclusive, common prefixes at the next `/`).
    struct Keys(BTreeSet<Vec<u8>>, AtomicUsize);

    impl Keys {
        fn new<I: IntoIterator<Item = String>>(keys: I) -> Self {
            Keys(keys.into_iter().map(String::into_bytes).collect(), AtomicUsize::new(0))
        }
        fn after<'a>(&'a self, prefix: &'a str, after: Option<&str>) -> impl Iterator<Item = &'a str> + 'a {
            let from = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
            let strict = after.is_some();
            self.0
                .range(from.clone()..)
                .filter(move |k| !strict || k.as_slice() > from.as_slice())
                .map(|k| std::str::from_utf8(k).expect("utf-8"))
                .filter(move |k| k.starts_with(prefix))
        }
    }

    #[async_trait::async_trait]
    impl KeyProbe for Keys {
        async fn first_key_after(&self, prefix: &str, after: Option<&str>) -> Result<Option<String>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Ok(self.after(prefix, after).next().map(str::to_string))
        }
        async fn folders_after(&self, prefix: &str, after: Option<&str>) -> Result<Vec<String>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let mut out: Vec<String> = Vec::new();
            for k in self.after(prefix, after) {
                if let Some(i) = k[prefix.len()..].find('/') {
                    let f = &k[..prefix.len() + i + 1];
                    if out.last().map(String::as_str) != Some(f) {
                        out.push(f.to_string());
                    }
                }
                if out.len() == 1000 {
                    break;
                }
            }
            Ok(out)
        }
    }

    /// Lists `(after, until]` under `prefix` as a shard does: everything after its lower
    /// bound, up to and with its upper bound.
    fn shard_keys(keys: &Keys, prefix: &str, l: &ListerState) -> Vec<String> {
        keys.after(prefix, l.after.as_deref())
            .take_while(|k| !l.past(k))
            .map(str::to_string)
            .collect()
    }

    fn run(f: impl std::future::Future<Output = Result<Vec<String>>>) -> Vec<String> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
            .expect("probes")
    }

    #[test]
    fn folders_give_the_boundaries_where_keys_have_them() {
        let keys = Keys::new((0..40).flat_map(|f| (0..5).map(move |i| format!("data/{f:02}/{i}"))));
        let b = run(boundaries(&keys, "", None, None, 4));
        assert_eq!(b, vec!["data/10/", "data/20/", "data/30/"]);
        // Two folder listings (the root's one folder, then its forty), no key probes.
        assert_eq!(keys.1.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn flat_keys_split_by_their_next_characters() {
        let keys = Keys::new((0..4096u32).map(|i| format!("{:08x}", i.wrapping_mul(2_654_435_761))));
        let b = run(boundaries(&keys, "", None, None, 8));
        assert_eq!(b, vec!["2", "4", "6", "8", "a", "c", "e"]);
        assert!(
            keys.1.load(Ordering::Relaxed) <= 4 * 8 + 8 + 1,
            "probes stay within the budget"
        );
    }

    /// The property the listing rests on: whatever the keys and wherever the splits fall,
    /// the shards' ranges partition the key space, so listing each shard to its bound lists
    /// every key exactly once, and no shard number is handed out twice.
    #[test]
    fn splits_partition_the_keys_exactly_seeded() {
        use rand::{Rng, SeedableRng};
        let mut split_seeds = 0;
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let alphabet: Vec<char> = "ab/-zé0\u{1F600}".chars().collect();
            let n = rng.random_range(0..300);
            let keys = Keys::new((0..n).map(|_| {
                let len = rng.random_range(1..12);
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect::<String>()
            }));
            let prefix = ["", "a", "a/"][rng.random_range(0..3)];
            let total = rng.random_range(1..=16u32);
            let mut shards = vec![ListerState {
                spare: total - 1,
                ..ListerState::default()
            }];
            // Split shards, at random points of their listings, until none has numbers left
            // or a round splits nothing.
            for _ in 0..6 {
                let mut born = Vec::new();
                for l in shards.iter_mut() {
                    let listed = shard_keys(&keys, prefix, l);
                    let at = (!listed.is_empty()).then(|| rng.random_range(0..listed.len()));
                    let last = at.map(|i| listed[i].clone()).or_else(|| l.after.clone());
                    let b = run(boundaries(
                        &keys,
                        prefix,
                        last.as_deref(),
                        l.until.as_deref(),
                        l.spare as usize + 1,
                    ));
                    for w in b.windows(2) {
                        assert!(gt(&w[1], &w[0]), "seed {seed}: boundaries increase");
                    }
                    for x in &b {
                        assert!(
                            last.as_deref().is_none_or(|a| gt(x, a)),
                            "seed {seed}: {x} after {last:?}"
                        );
                        assert!(!l.past(x) && l.until.as_deref() != Some(x.as_str()));
                    }
                    born.extend(divide(l, &b));
                }
                if born.is_empty() {
                    break;
                }
                shards.extend(born);
            }
            split_seeds += usize::from(shards.len() > 1);
            let mut numbers: Vec<u32> = shards.iter().map(|s| s.shard).collect();
            numbers.sort_unstable();
            let count = numbers.len();
            numbers.dedup();
            assert_eq!(numbers.len(), count, "seed {seed}: a shard number twice");
            assert!(
                numbers.iter().all(|&s| s < total),
                "seed {seed}: {numbers:?} within {total}"
            );
            let mut listed: Vec<String> = shards.iter().flat_map(|l| shard_keys(&keys, prefix, l)).collect();
            listed.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let all: Vec<String> = keys.after(prefix, None).map(str::to_string).collect();
            assert_eq!(listed, all, "seed {seed}: every key in exactly one shard");
        }
        // The property is only shown if the splits happen.
        assert!(split_seeds > 100, "only {split_seeds} of 200 seeds split");
    }

    #[test]
    fn divide_shares_the_numbers_out() {
        let mut l = ListerState {
            shard: 3,
            spare: 6,
            until: Some("z".into()),
            ..ListerState::default()
        };
        let kids = divide(&mut l, &["c".into(), "m".into()]);
        assert_eq!((l.until.as_deref(), l.spare), (Some("c"), 2));
        let got: Vec<_> = kids
            .iter()
            .map(|k| (k.shard, k.after.as_deref(), k.until.as_deref(), k.spare))
            .collect();
        assert_eq!(got, vec![(6, Some("c"), Some("m"), 1), (8, Some("m"), Some("z"), 1)]);
        assert_eq!(l.born, vec![6, 8]);
        // No numbers to spare: no split.
        let mut last = ListerState::default();
        assert!(divide(&mut last, &["q".into()]).is_empty());
        assert_eq!(last.until, None);
    }
}
