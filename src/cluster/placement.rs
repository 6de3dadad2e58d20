//! Which node owns which camera: bounded-load rendezvous hashing. Pure and deterministic: every
//! node computes the same answer from the same camera list and the same live nodes, so nodes
//! agree without talking to each other (etcd then holds each owner under its lease).
//!
//! Each (node, camera) pair gets a score from a fixed hash of both names. Cameras are placed in
//! the order of their ids; each goes to its highest-scoring node that still has room, and a
//! node has room for `ceil(cameras / nodes)`. So:
//! - no node holds more than one camera above the fair share (`floor`), whatever the hash does;
//! - when a node joins or leaves, most cameras keep their owner (a camera moves only if its
//!   best node changed or a node with room ran out of it), as with plain rendezvous hashing;
//! - the answer does not depend on the order in which nodes or cameras are listed.
//!
//! Belongs here: the assignment. Does not belong here: etcd, leases, starting streams.

use std::collections::BTreeMap;

use uuid::Uuid;

/// FNV-1a, 64 bit: stable across builds, platforms and Rust versions (std's hasher is not
/// guaranteed to be), and good enough to spread names.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final mix (from splitmix64): FNV's low bits are weak for short inputs.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The score of `node` for `camera`: higher wins.
pub fn score(node: &str, camera: &Uuid) -> u64 {
    fnv1a(&[node.as_bytes(), camera.as_bytes()])
}

/// The owner of every camera, by camera id. Empty when there are no nodes.
pub fn assign(cameras: &[Uuid], nodes: &[String]) -> BTreeMap<Uuid, String> {
    let mut out = BTreeMap::new();
    let mut nodes: Vec<&String> = nodes.iter().collect();
    nodes.sort();
    nodes.dedup();
    if nodes.is_empty() {
        return out;
    }
    let mut cameras: Vec<Uuid> = cameras.to_vec();
    cameras.sort_unstable();
    cameras.dedup();
    let capacity = cameras.len().div_ceil(nodes.len());
    let mut load: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
    for cam in cameras {
        let best = nodes
            .iter()
            .filter(|n| load[n.as_str()] < capacity)
            .max_by_key(|n| (score(n, &cam), std::cmp::Reverse(n.as_str())));
        if let Some(n) = best {
            *load.entry(n.as_str()).or_default() += 1;
            out.insert(cam, (*n).clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cams(n: u128) -> Vec<Uuid> {
        (0..n)
            .map(|i| Uuid::from_u128(0x1234_0000 + i * 7919))
            .collect()
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn loads(a: &BTreeMap<Uuid, String>) -> BTreeMap<String, usize> {
        let mut l = BTreeMap::new();
        for n in a.values() {
            *l.entry(n.clone()).or_default() += 1;
        }
        l
    }

    #[test]
    fn every_camera_has_one_owner_and_no_node_is_more_than_one_above_fair() {
        for (c, n) in [(9, 3), (10, 3), (200, 7), (5, 8), (1, 1), (100, 2)] {
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let a = assign(&cams(c), &names);
            assert_eq!(a.len(), c as usize);
            let fair = c as usize / n;
            for (node, load) in loads(&a) {
                assert!(
                    load <= fair + 1,
                    "{c} cameras on {n} nodes: {node} has {load}"
                );
            }
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_listing_order() {
        let c = cams(40);
        let mut rev = c.clone();
        rev.reverse();
        let a = assign(&c, &nodes(&["a", "b", "c"]));
        let b = assign(&rev, &nodes(&["c", "a", "b", "a"]));
        assert_eq!(a, b);
    }

    #[test]
    fn a_node_leaving_moves_its_cameras_and_few_others() {
        let c = cams(90);
        let before = assign(&c, &nodes(&["a", "b", "c"]));
        let after = assign(&c, &nodes(&["a", "b"]));
        let moved_from_survivors = before
            .iter()
            .filter(|(cam, owner)| owner.as_str() != "c" && after[*cam] != **owner)
            .count();
        // Every camera of `c` moves; of the 60 on a and b, only a few make room.
        assert!(moved_from_survivors <= 10, "{moved_from_survivors} moved");
        assert!(after.values().all(|o| o != "c"));
    }

    #[test]
    fn a_node_joining_takes_about_its_share() {
        let c = cams(90);
        let before = assign(&c, &nodes(&["a", "b", "c"]));
        let after = assign(&c, &nodes(&["a", "b", "c", "d"]));
        let moved = before.iter().filter(|(cam, o)| after[*cam] != **o).count();
        let to_d = after.values().filter(|o| o.as_str() == "d").count();
        assert!((22..=23).contains(&to_d), "d took {to_d}");
        assert!(moved <= to_d + 10, "{moved} moved for {to_d} new");
    }

    #[test]
    fn no_nodes_no_owners_and_scores_are_stable() {
        assert!(assign(&cams(3), &[]).is_empty());
        // Fixed forever: nodes of different builds must agree.
        let cam = Uuid::from_u128(0x0742091c_19cd_4658_9b4f_5320da160f45);
        assert_eq!(score("a", &cam), score("a", &cam));
        assert_ne!(score("a", &cam), score("b", &cam));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }
}
