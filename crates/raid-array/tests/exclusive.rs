//! One process per array, and the lock follows membership: an assembled
//! array holds every member and spare directory, lets go of one that is
//! removed (so its disk can be unmounted), takes one that joins, and lets
//! go of all at close.

use std::path::Path;
use std::time::Duration;

use raid_array::member::{DirMember, Member};
use raid_array::{Array, ArrayError, AssembleOptions, CreateOptions};
use raid_core::Level;

mod common;
use common::make_dirs;

/// Whether another holder (this test, through a handle of its own) could
/// take the directory's lock now.
fn free(dir: &Path) -> bool {
    DirMember::open(dir)
        .unwrap()
        .lock_exclusive(Duration::ZERO)
        .unwrap()
}

#[test]
fn the_lock_follows_membership() {
    let tmp = tempfile::tempdir().unwrap();
    let m = make_dirs(tmp.path(), "m", 4);
    let s = make_dirs(tmp.path(), "s", 2);
    let mut o = CreateOptions::new("excl", Level::Raid5(Default::default()), m.clone());
    o.spares = vec![s[0].clone()];
    o.allow_same_fs = true;
    let a = Array::create(&o).unwrap();
    assert!(
        m.iter().chain(&s[..1]).all(|d| !free(d)),
        "all held while assembled"
    );

    // A second assembly is refused with EBUSY once its wait is over.
    let mut again = AssembleOptions::new(m.clone());
    again.lock_wait = Duration::from_millis(100);
    let e = Array::assemble(&again).err().expect("refused");
    assert!(matches!(e, ArrayError::Busy(_)), "{e}");
    // Read-only assembly takes no lock.
    let mut ro = AssembleOptions::new(m.clone());
    ro.read_only = true;
    Array::assemble(&ro).unwrap().close().unwrap();

    // A removed spare and a removed member are let go.
    a.remove_spare(&s[0]).unwrap();
    assert!(free(&s[0]));
    a.fail(3).unwrap();
    a.remove(3).unwrap();
    assert!(free(&m[3]));
    // A directory joining is held; one held elsewhere cannot join.
    a.add_spare(&s[1]).unwrap();
    assert!(!free(&s[1]));
    let elsewhere = DirMember::open(&m[3]).unwrap();
    assert!(elsewhere.lock_exclusive(Duration::ZERO).unwrap());
    let e = a.add_spare(&m[3]).expect_err("refused");
    assert!(matches!(e, ArrayError::Busy(_)), "{e}");
    drop(elsewhere);

    a.close().unwrap();
    assert!(m.iter().chain(&s).all(|d| free(d)), "all let go at close");
}
