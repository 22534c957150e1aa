//! Who may connect: the server checks each UNIX-socket client's user with
//! `SO_PEERCRED` against an [`AccessPolicy`].

/// The users and groups a server lets connect over its UNIX socket.
///
/// The default, [`AccessPolicy::same_user`], lets in the server's own user
/// and root, as a socket of mode 0600 would. TCP carries no credentials:
/// a TCP server accepts whoever reaches its port, so bind it to an address
/// only trusted hosts reach.
///
/// ```
/// use shmring_rpc::AccessPolicy;
/// let p = AccessPolicy::same_user().allow_uid(1001).allow_gid(50);
/// assert!(p.allows(1001, 1001));
/// assert!(p.allows(2000, 50));
/// assert!(!AccessPolicy::only_uids([1001]).allows(0, 0)); // not even root
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
    root: bool,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy::same_user()
    }
}

impl AccessPolicy {
    /// This process's user, and root.
    pub fn same_user() -> AccessPolicy {
        AccessPolicy { uids: vec![nix::unistd::geteuid().as_raw()], gids: Vec::new(), root: true }
    }

    /// Exactly these users (not root, unless [`AccessPolicy::allow_root`]).
    pub fn only_uids(uids: impl IntoIterator<Item = u32>) -> AccessPolicy {
        AccessPolicy { uids: uids.into_iter().collect(), gids: Vec::new(), root: false }
    }

    /// Also let in user `uid`.
    pub fn allow_uid(mut self, uid: u32) -> AccessPolicy {
        self.uids.push(uid);
        self
    }

    /// Also let in every user whose primary group is `gid`.
    pub fn allow_gid(mut self, gid: u32) -> AccessPolicy {
        self.gids.push(gid);
        self
    }

    /// Let root in, or not.
    pub fn allow_root(mut self, root: bool) -> AccessPolicy {
        self.root = root;
        self
    }

    /// Whether a client running as `uid` with primary group `gid` may connect.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        (self.root && uid == 0) || self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}
