//! Who a task runs as: its spec's `user` (a name, a uid or `uid:gid`), else its image's user when that is not root,
//! else the agent's unprivileged task user ([`User::TASK_DEFAULT`]). Root only where the agent allows it.
//!
//! Names are looked up in the task's own `/etc/passwd` and `/etc/group`: the image's (topmost layer first, read
//! without ever leaving the layer, whatever links the image holds) or, for a task on the host's root file system,
//! the host's. [`resolve`] is the decision, a pure function; [`Accounts`] reads the files.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::container::User;

/// The most of an account file read (a larger one is not an account file).
const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// Why a task's user cannot be had.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A name not in the account files.
    #[error("no user {0:?} in the task's /etc/passwd")]
    UnknownUser(String),
    /// A group name not in the account files.
    #[error("no group {0:?} in the task's /etc/group")]
    UnknownGroup(String),
    /// Root, on an agent that does not allow it.
    #[error(
        "the task would run as root ({0}), which this agent does not allow: give it an unprivileged user, or start \
         the agent with --allow-root-tasks"
    )]
    RootNotAllowed(String),
}

/// Looks names up; the agent's is [`Accounts`], tests give their own.
pub trait Lookup {
    /// The uid and primary gid of user `name`.
    fn user(&self, name: &str) -> Option<(u32, u32)>;
    /// The gid of group `name`.
    fn group(&self, name: &str) -> Option<u32>;
}

/// The user a task runs as: `spec_user` (the task's, or its framework's), else `image_user` when it is not root,
/// else [`User::TASK_DEFAULT`]; root is refused unless `allow_root`.
///
/// # Errors
/// A name that is not in the account files, or root where it is not allowed.
pub fn resolve(
    spec_user: Option<&str>,
    image_user: Option<&str>,
    allow_root: bool,
    accounts: &dyn Lookup,
) -> Result<User, Error> {
    let image_user = image_user.map(str::trim).filter(|u| !u.is_empty());
    let (given, user) = match (spec_user, image_user) {
        (Some(given), _) => (given, parse(given, accounts)?),
        (None, Some(given)) => match parse(given, accounts)? {
            user if user.is_root() => return Ok(User::TASK_DEFAULT),
            user => (given, user),
        },
        (None, None) => return Ok(User::TASK_DEFAULT),
    };
    if user.is_root() && !allow_root {
        return Err(Error::RootNotAllowed(given.to_owned()));
    }
    Ok(user)
}

/// `name`, `uid`, `uid:gid`, `name:group` or `uid:group`.
fn parse(given: &str, accounts: &dyn Lookup) -> Result<User, Error> {
    let (user, group) = match given.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (given, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        // A uid without an account gets the group of the same number, never root's group.
        Ok(uid) => accounts.user(user).map_or((uid, uid), |(_, gid)| (uid, gid)),
        Err(_) => accounts.user(user).ok_or_else(|| Error::UnknownUser(user.to_owned()))?,
    };
    let gid = match group {
        None => primary,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => accounts.group(group).ok_or_else(|| Error::UnknownGroup(group.to_owned()))?,
        },
    };
    Ok(User { uid, gid })
}

/// The `/etc/passwd` entry `name` (by name, or by uid when `name` is a number): its uid and gid.
#[must_use]
pub fn passwd_entry(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (uid, gid) = (fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?);
        (fields[0] == name || fields[2] == name).then_some((uid, gid))
    })
}

/// The gid of group `name` in an `/etc/group` text.
#[must_use]
pub fn group_entry(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&name)).then(|| fields.get(2)?.parse().ok()).flatten()
    })
}

/// A task's account files.
#[derive(Debug, Default)]
pub struct Accounts {
    passwd: String,
    group: String,
}

impl Accounts {
    /// The host's `/etc/passwd` and `/etc/group` (for a task on the host's root file system).
    #[must_use]
    pub fn host() -> Self {
        Self {
            passwd: std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            group: std::fs::read_to_string("/etc/group").unwrap_or_default(),
        }
    }

    /// An image's, from its unpacked layers (bottom first): each file from the topmost layer that has it, resolved
    /// inside that layer (a link in an image never reaches the host's files).
    #[must_use]
    pub fn image(layers: &[PathBuf]) -> Self {
        let find = |file: &str| layers.iter().rev().find_map(|layer| read_beneath(layer, file)).unwrap_or_default();
        Self { passwd: find("etc/passwd"), group: find("etc/group") }
    }
}

impl Lookup for Accounts {
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        passwd_entry(&self.passwd, name)
    }

    fn group(&self, name: &str) -> Option<u32> {
        group_entry(&self.group, name)
    }
}

/// `relative` below `root`, with every link resolved as if `root` were `/`, if it is a regular file.
fn read_beneath(root: &Path, relative: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let fd = rustix::fs::openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
    .ok()?;
    let file = std::fs::File::from(fd);
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_ACCOUNT_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\napp:x:1000:1001::/:/\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:app\n";

    fn accounts() -> Accounts {
        Accounts { passwd: PASSWD.into(), group: GROUP.into() }
    }

    fn user(uid: u32, gid: u32) -> User {
        User { uid, gid }
    }

    #[test]
    fn without_a_user_a_task_runs_as_the_unprivileged_default() {
        assert_eq!(resolve(None, None, false, &accounts()), Ok(User::TASK_DEFAULT));
        assert_eq!(resolve(None, Some(""), false, &accounts()), Ok(User::TASK_DEFAULT));
        // An image that says root (or says it by number) does not make a task root.
        assert_eq!(resolve(None, Some("root"), true, &accounts()), Ok(User::TASK_DEFAULT));
        assert_eq!(resolve(None, Some("0:0"), false, &accounts()), Ok(User::TASK_DEFAULT));
    }

    #[test]
    fn names_numbers_and_groups_are_resolved() {
        let a = accounts();
        assert_eq!(resolve(Some("www-data"), None, false, &a), Ok(user(33, 33)));
        assert_eq!(resolve(Some("app"), None, false, &a), Ok(user(1000, 1001)));
        assert_eq!(resolve(Some("1000"), None, false, &a), Ok(user(1000, 1001)), "a known uid keeps its group");
        assert_eq!(resolve(Some("4242"), None, false, &a), Ok(user(4242, 4242)), "an unknown uid: never group 0");
        assert_eq!(resolve(Some("4242:7"), None, false, &a), Ok(user(4242, 7)));
        assert_eq!(resolve(Some("app:staff"), None, false, &a), Ok(user(1000, 50)));
        assert_eq!(resolve(None, Some("www-data"), false, &a), Ok(user(33, 33)), "the image's non-root user");
        assert_eq!(resolve(Some("app"), Some("www-data"), false, &a), Ok(user(1000, 1001)), "the spec wins");
    }

    #[test]
    fn root_needs_the_agents_permission() {
        let a = accounts();
        for given in ["root", "0", "0:0", "root:staff"] {
            assert_eq!(resolve(Some(given), None, false, &a), Err(Error::RootNotAllowed(given.into())), "{given}");
            assert!(resolve(Some(given), None, true, &a).is_ok_and(User::is_root), "{given}");
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        let a = accounts();
        assert_eq!(resolve(Some("nobody-here"), None, false, &a), Err(Error::UnknownUser("nobody-here".into())));
        assert_eq!(resolve(Some("app:nogroup"), None, false, &a), Err(Error::UnknownGroup("nogroup".into())));
        assert_eq!(passwd_entry("broken line\n::x:y\n", "x"), None);
    }

    #[test]
    fn an_images_link_to_the_hosts_files_is_not_followed_out_of_the_layer() {
        let layer = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(layer.path().join("etc")).unwrap();
        // An image whose /etc/passwd points at the host's: resolved inside the layer, where nothing is.
        std::os::unix::fs::symlink("/etc/passwd", layer.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/group", layer.path().join("etc/group")).unwrap();
        let accounts = Accounts::image(&[layer.path().to_path_buf()]);
        assert_eq!(accounts.user("root"), None);
        assert_eq!(accounts.group("root"), None);
        // A file of its own is read, and an upper layer's wins.
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/passwd"), PASSWD).unwrap();
        let accounts = Accounts::image(&[layer.path().to_path_buf(), upper.path().to_path_buf()]);
        assert_eq!(accounts.user("www-data"), Some((33, 33)));
    }
}
