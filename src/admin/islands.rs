//! Islands: hosts linked by master-replica relations, directly or through chains.
//!
//! A failover only moves a master between the hosts of a master and its replica, so load can
//! never cross from one island to another. CHECK judges evenness per island and REBALANCE
//! plans per island; both use this one definition.

/// Labels each of `hosts` hosts with its island: `out[h]` is the same for two hosts exactly
/// when a chain of `links` (pairs of host indices, a master's host and a replica's host)
/// joins them. Labels are host indices (each island's representative), so they are stable
/// for a given input. Union-find with path halving.
pub fn components(hosts: usize, links: impl IntoIterator<Item = (usize, usize)>) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..hosts).collect();
    fn root(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (a, b) in links {
        if a < hosts && b < hosts {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            parent[ra] = rb;
        }
    }
    (0..hosts).map(|h| root(&mut parent, h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_join_and_others_stay_apart() {
        // 0-1, 1-2 chain; 3-4 pair; 5 alone.
        let c = components(6, [(0, 1), (2, 1), (3, 4)]);
        assert_eq!(c[0], c[1]);
        assert_eq!(c[1], c[2]);
        assert_eq!(c[3], c[4]);
        assert_ne!(c[0], c[3]);
        assert_ne!(c[5], c[0]);
        assert_ne!(c[5], c[3]);
    }
}
