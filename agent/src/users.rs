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
    /// A system group that is not the user's own, on an agent that does not allow it.
    #[error(
        "the task would run in group {group} ({given}), a system group (below {FIRST_ORDINARY_GID}) that is not its \
         user's own primary group, which this agent does not allow: use the user's own group or one of \
         {FIRST_ORDINARY_GID} or above, or start the agent with --allow-root-tasks"
    )]
    GroupNotAllowed {
        /// The user as given.
        given: String,
        /// The group, as `name gid` or `gid`.
        group: String,
    },
}

/// The first gid of an ordinary group. Below it are the system's groups — root (0), shadow (42), disk (6), adm (4),
/// docker — whose members can read or write what the host keeps from its users.
pub const FIRST_ORDINARY_GID: u32 = 1000;

/// Looks names up; the agent's is [`Accounts`], tests give their own.
pub trait Lookup {
    /// The uid and primary gid of user `name`.
    fn user(&self, name: &str) -> Option<(u32, u32)>;
    /// The gid of group `name`.
    fn group(&self, name: &str) -> Option<u32>;
}

/// The user a task runs as: `spec_user` (the task's, or its framework's), else `image_user` when it is not root,
/// else [`User::TASK_DEFAULT`]. Unless `allow_root`: root is refused, and so is a privileged group — root's (0), or
/// any system group (below [`FIRST_ORDINARY_GID`]) that is not the primary group of the user's account. An image's
/// user in such a group keeps its uid and gets [`User::TASK_DEFAULT`]'s group.
///
/// # Errors
/// A name that is not in the account files, root or a privileged group where they are not allowed.
pub fn resolve(
    spec_user: Option<&str>,
    image_user: Option<&str>,
    allow_root: bool,
    accounts: &dyn Lookup,
) -> Result<User, Error> {
    let image_user = image_user.map(str::trim).filter(|u| !u.is_empty());
    let (given, parsed) = match (spec_user, image_user) {
        (Some(given), _) => (given, parse(given, accounts)?),
        (None, Some(given)) => match parse(given, accounts)? {
            parsed if parsed.user.is_root() => return Ok(User::TASK_DEFAULT),
            parsed if !allow_root && parsed.privileged_group() => {
                return Ok(User { uid: parsed.user.uid, gid: User::TASK_DEFAULT.gid });
            }
            parsed => (given, parsed),
        },
        (None, None) => return Ok(User::TASK_DEFAULT),
    };
    if allow_root {
        return Ok(parsed.user);
    }
    if parsed.user.is_root() {
        return Err(Error::RootNotAllowed(given.to_owned()));
    }
    if parsed.privileged_group() {
        let gid = parsed.user.gid;
        let group = parsed.group_name.map_or_else(|| gid.to_string(), |name| format!("{name} {gid}"));
        return Err(Error::GroupNotAllowed { given: given.to_owned(), group });
    }
    Ok(parsed.user)
}

/// A user as given, resolved.
struct Parsed {
    user: User,
    /// The primary gid of the user's account, when it has one.
    own_group: Option<u32>,
    /// The group's name, when it was given by name.
    group_name: Option<String>,
}

impl Parsed {
    /// Root's group, or a system group that is not the account's own.
    fn privileged_group(&self) -> bool {
        let gid = self.user.gid;
        gid == 0 || (gid < FIRST_ORDINARY_GID && self.own_group != Some(gid))
    }
}

/// `name`, `uid`, `uid:gid`, `name:group` or `uid:group`.
fn parse(given: &str, accounts: &dyn Lookup) -> Result<Parsed, Error> {
    let (user, group) = match given.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (given, None),
    };
    let account = accounts.user(user);
    let (uid, primary) = match user.parse::<u32>() {
        // A uid without an account gets the group of the same number (a system one is then refused).
        Ok(uid) => account.map_or((uid, uid), |(_, gid)| (uid, gid)),
        Err(_) => account.ok_or_else(|| Error::UnknownUser(user.to_owned()))?,
    };
    let (gid, group_name) = match group {
        None => (primary, None),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => (gid, None),
            Err(_) => {
                (accounts.group(group).ok_or_else(|| Error::UnknownGroup(group.to_owned()))?, Some(group.to_owned()))
            }
        },
    };
    Ok(Parsed { user: User { uid, gid }, own_group: account.map(|(_, gid)| gid), group_name })
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
        assert_eq!(resolve(Some("4242:2000"), None, false, &a), Ok(user(4242, 2000)));
        assert_eq!(resolve(Some("4242:7"), None, true, &a), Ok(user(4242, 7)), "allowed with --allow-root-tasks");
        assert_eq!(resolve(Some("app:staff"), None, true, &a), Ok(user(1000, 50)));
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
    fn a_system_group_is_only_a_users_own() {
        let a = Accounts { passwd: PASSWD.into(), group: format!("{GROUP}shadow:x:42:\n") };
        let refused = |given: &str, group: &str| {
            assert_eq!(
                resolve(Some(given), None, false, &a),
                Err(Error::GroupNotAllowed { given: given.into(), group: group.into() }),
                "{given}"
            );
        };
        refused("65532:42", "42");
        refused("65532:shadow", "shadow 42");
        refused("1:0", "0");
        refused("app:root", "root 0");
        refused("app:staff", "staff 50");
        refused("42", "42"); // no account: its group would be the uid's number, shadow's
        // The account's own group, however low, and ordinary groups are fine.
        assert_eq!(resolve(Some("www-data"), None, false, &a), Ok(user(33, 33)));
        assert_eq!(resolve(Some("www-data:www-data"), None, false, &a), Ok(user(33, 33)));
        assert_eq!(resolve(Some("65532:1000"), None, false, &a), Ok(user(65532, 1000)));
        // An image's user in a system group keeps its uid and gets the task default group.
        assert_eq!(resolve(None, Some("1001:0"), false, &a), Ok(user(1001, 65532)));
        assert_eq!(resolve(None, Some("1001:0"), true, &a), Ok(user(1001, 0)));
        let message = resolve(Some("65532:shadow"), None, false, &a).unwrap_err().to_string();
        assert!(message.contains("group shadow 42") && message.contains("--allow-root-tasks"), "{message}");
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
