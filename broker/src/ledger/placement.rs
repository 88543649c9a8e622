//! Which bookies a ledger is written to: a new ensemble at creation, one
//! replacement at an ensemble change. Spreads over racks when bookies carry
//! rack labels, and at random within a rack so load spreads.
//!
//! Pure choice over the registrations it is given (plus one helper that
//! reads them); it never contacts a bookie nor writes metadata.

use std::collections::{BTreeMap, HashSet};

use magnetar_metadata::keys::{self, BookieRegistration};
use magnetar_metadata::MetadataStore;
use rand::seq::SliceRandom;
use rand::Rng;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    #[error("not enough bookies: {needed} needed, {available} writable and not excluded")]
    NotEnoughBookies { needed: usize, available: usize },
}

/// The registrations of every live bookie that may take new copies, sorted
/// by address: a bookie being decommissioned is left out. An entry that
/// cannot be decoded is skipped (and logged) rather than failing placement.
pub async fn available_bookies(
    store: &dyn MetadataStore,
) -> magnetar_metadata::Result<Vec<BookieRegistration>> {
    let draining: Vec<String> = store
        .list(&keys::bookies_decommission_prefix())
        .await?
        .iter()
        .filter_map(|kv| keys::child_name(&keys::bookies_decommission_prefix(), &kv.key))
        .collect();
    let mut bookies = Vec::new();
    for kv in store.list(&keys::bookies_available_prefix()).await? {
        match BookieRegistration::from_bytes(&kv.value) {
            Ok(registration) => bookies.push(registration),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping bookie registration"),
        }
    }
    bookies.retain(|b| !draining.contains(&b.address));
    bookies.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(bookies)
}

/// Picks `size` distinct bookies among `candidates`, skipping read-only ones
/// and those in `exclude`. Racks are taken round-robin (in random order), so
/// an ensemble spans as many racks as it can; bookies without a rack share
/// one group. Within a rack the choice is random.
pub fn choose_ensemble(
    candidates: &[BookieRegistration],
    size: usize,
    exclude: &[String],
) -> Result<Vec<String>, PlacementError> {
    choose_ensemble_with(&mut rand::rng(), candidates, size, exclude)
}

/// [`choose_ensemble`] with a given source of randomness.
pub fn choose_ensemble_with<R: Rng + ?Sized>(
    rng: &mut R,
    candidates: &[BookieRegistration],
    size: usize,
    exclude: &[String],
) -> Result<Vec<String>, PlacementError> {
    let eligible = eligible(candidates, exclude);
    if eligible.len() < size {
        return Err(PlacementError::NotEnoughBookies {
            needed: size,
            available: eligible.len(),
        });
    }
    let mut racks: Vec<Vec<&BookieRegistration>> = by_rack(&eligible).into_values().collect();
    racks.shuffle(rng);
    for rack in &mut racks {
        rack.shuffle(rng);
    }
    let mut chosen = Vec::with_capacity(size);
    let mut round = 0;
    while chosen.len() < size {
        for rack in &racks {
            if chosen.len() == size {
                break;
            }
            if let Some(bookie) = rack.get(round) {
                chosen.push(bookie.address.clone());
            }
        }
        round += 1;
    }
    Ok(chosen)
}

/// One bookie to take `failed`'s place in `current_ensemble`: writable, not
/// already in the ensemble, preferably from a rack none of the remaining
/// members is in, random otherwise.
pub fn choose_replacement(
    candidates: &[BookieRegistration],
    current_ensemble: &[String],
    failed: &str,
) -> Result<String, PlacementError> {
    choose_replacement_with(&mut rand::rng(), candidates, current_ensemble, failed)
}

/// [`choose_replacement`] with a given source of randomness.
pub fn choose_replacement_with<R: Rng + ?Sized>(
    rng: &mut R,
    candidates: &[BookieRegistration],
    current_ensemble: &[String],
    failed: &str,
) -> Result<String, PlacementError> {
    let mut exclude = current_ensemble.to_vec();
    exclude.push(failed.to_string());
    let eligible = eligible(candidates, &exclude);
    if eligible.is_empty() {
        return Err(PlacementError::NotEnoughBookies {
            needed: 1,
            available: 0,
        });
    }
    let used_racks: HashSet<Option<&str>> = current_ensemble
        .iter()
        .filter(|b| b.as_str() != failed)
        .filter_map(|b| candidates.iter().find(|c| &c.address == b))
        .map(|c| c.rack.as_deref())
        .collect();
    let fresh: Vec<&BookieRegistration> = eligible
        .iter()
        .copied()
        .filter(|c| c.rack.is_some() && !used_racks.contains(&c.rack.as_deref()))
        .collect();
    let pool = if fresh.is_empty() { &eligible } else { &fresh };
    Ok(pool[rng.random_range(0..pool.len())].address.clone())
}

/// Writable candidates not in `exclude`, one per address.
fn eligible<'a>(
    candidates: &'a [BookieRegistration],
    exclude: &[String],
) -> Vec<&'a BookieRegistration> {
    let mut seen = HashSet::new();
    candidates
        .iter()
        .filter(|c| !c.read_only && !exclude.contains(&c.address))
        .filter(|c| seen.insert(c.address.as_str()))
        .collect()
}

fn by_rack<'a>(
    bookies: &[&'a BookieRegistration],
) -> BTreeMap<Option<&'a str>, Vec<&'a BookieRegistration>> {
    let mut racks: BTreeMap<Option<&str>, Vec<&BookieRegistration>> = BTreeMap::new();
    for bookie in bookies {
        racks
            .entry(bookie.rack.as_deref())
            .or_default()
            .push(bookie);
    }
    racks
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn bookie(address: &str, rack: Option<&str>) -> BookieRegistration {
        BookieRegistration {
            address: address.into(),
            rack: rack.map(Into::into),
            read_only: false,
            free_disk_bytes: 1 << 30,
            total_disk_bytes: 2 << 30,
            http_address: None,
        }
    }

    fn rack_of<'a>(candidates: &'a [BookieRegistration], address: &str) -> Option<&'a str> {
        candidates
            .iter()
            .find(|c| c.address == address)
            .and_then(|c| c.rack.as_deref())
    }

    fn racked() -> Vec<BookieRegistration> {
        vec![
            bookie("a1:1", Some("a")),
            bookie("a2:1", Some("a")),
            bookie("a3:1", Some("a")),
            bookie("a4:1", Some("a")),
            bookie("b1:1", Some("b")),
            bookie("b2:1", Some("b")),
            bookie("c1:1", Some("c")),
        ]
    }

    #[test]
    fn ensembles_spread_across_racks() {
        let candidates = racked();
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let three = choose_ensemble_with(&mut rng, &candidates, 3, &[]).unwrap();
            let racks: HashSet<_> = three.iter().map(|b| rack_of(&candidates, b)).collect();
            assert_eq!(racks.len(), 3, "seed {seed}: {three:?}");

            let five = choose_ensemble_with(&mut rng, &candidates, 5, &[]).unwrap();
            let distinct: HashSet<_> = five.iter().collect();
            assert_eq!(distinct.len(), 5, "seed {seed}: {five:?}");
            let per_rack = |r| {
                five.iter()
                    .filter(|b| rack_of(&candidates, b) == Some(r))
                    .count()
            };
            // Rack c has one bookie, so a and b share the other four evenly.
            assert_eq!((per_rack("a"), per_rack("b"), per_rack("c")), (2, 2, 1));
        }
    }

    #[test]
    fn choice_within_a_rack_is_random() {
        let candidates = racked();
        let mut picked = HashSet::new();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let ensemble = choose_ensemble_with(&mut rng, &candidates, 3, &[]).unwrap();
            picked.extend(ensemble.into_iter().filter(|b| b.starts_with('a')));
        }
        assert_eq!(picked.len(), 4, "only {picked:?} of rack a ever chosen");
    }

    #[test]
    fn read_only_and_excluded_bookies_are_skipped() {
        let mut candidates = vec![
            bookie("x:1", None),
            bookie("y:1", None),
            bookie("z:1", None),
            bookie("w:1", None),
        ];
        candidates[0].read_only = true;
        for _ in 0..50 {
            let ensemble = choose_ensemble(&candidates, 2, &["y:1".to_string()]).unwrap();
            let mut sorted = ensemble.clone();
            sorted.sort();
            assert_eq!(sorted, vec!["w:1".to_string(), "z:1".to_string()]);
        }
    }

    #[test]
    fn not_enough_bookies_is_an_error() {
        let mut candidates = vec![
            bookie("x:1", None),
            bookie("y:1", None),
            bookie("x:1", None),
        ];
        assert_eq!(
            choose_ensemble(&candidates, 3, &[]),
            Err(PlacementError::NotEnoughBookies {
                needed: 3,
                available: 2
            })
        );
        candidates[1].read_only = true;
        assert_eq!(
            choose_ensemble(&candidates, 2, &[]),
            Err(PlacementError::NotEnoughBookies {
                needed: 2,
                available: 1
            })
        );
        assert_eq!(choose_ensemble(&candidates, 0, &[]), Ok(vec![]));
        assert_eq!(
            choose_replacement(&candidates, &["x:1".into()], "x:1"),
            Err(PlacementError::NotEnoughBookies {
                needed: 1,
                available: 0
            })
        );
    }

    #[test]
    fn replacement_prefers_a_rack_not_in_the_ensemble() {
        let candidates = racked();
        let ensemble: Vec<String> = vec!["a1:1".into(), "b1:1".into(), "a2:1".into()];
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            // The ensemble keeps racks a and b; c is the only rack it lacks.
            let replacement =
                choose_replacement_with(&mut rng, &candidates, &ensemble, "a2:1").unwrap();
            assert_eq!(replacement, "c1:1");
        }
        // Every rack already used: any writable bookie outside the ensemble.
        let full: Vec<String> = vec!["a1:1".into(), "b1:1".into(), "c1:1".into()];
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let replacement =
                choose_replacement_with(&mut rng, &candidates, &full, "c1:1").unwrap();
            assert!(!full.contains(&replacement), "{replacement}");
        }
        // The failed bookie itself is never chosen, even if it is absent
        // from the ensemble list.
        let replacement = choose_replacement(&candidates[..2], &["a1:1".into()], "a2:1");
        assert!(replacement.is_err());
    }

    #[tokio::test]
    async fn reads_registrations_from_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let store = magnetar_metadata::EmbeddedStore::open(dir.path())
            .await
            .unwrap();
        for b in [bookie("q:1", Some("r")), bookie("p:1", None)] {
            store
                .put(
                    &keys::bookie_available(&b.address),
                    b.to_bytes().unwrap(),
                    magnetar_metadata::Expect::Any,
                    None,
                )
                .await
                .unwrap();
        }
        store
            .put(
                &keys::bookie_available("junk:1"),
                bytes::Bytes::from_static(b"{"),
                magnetar_metadata::Expect::Any,
                None,
            )
            .await
            .unwrap();
        let found = available_bookies(&store).await.unwrap();
        let addresses: Vec<_> = found.iter().map(|b| b.address.as_str()).collect();
        assert_eq!(addresses, vec!["p:1", "q:1"]);
        assert_eq!(found[1].rack.as_deref(), Some("r"));
        // A bookie being decommissioned gets no new copies.
        store
            .put(
                &keys::bookie_decommission("p:1"),
                bytes::Bytes::new(),
                magnetar_metadata::Expect::Any,
                None,
            )
            .await
            .unwrap();
        let found = available_bookies(&store).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address, "q:1");
    }
}
