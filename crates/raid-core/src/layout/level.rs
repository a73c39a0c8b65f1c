//! RAID levels: their names on the command line and their codes on disk.
//!
//! A [`Level`] only names a redundancy scheme; whether it fits a member count
//! and chunk size is decided by [`Geometry::new`](super::Geometry::new).
//!
//! Names (case-insensitive, surrounding blanks ignored; [`Display`] prints the
//! first, canonical form of each, and parsing it gives the same level back):
//!
//! | level                      | names                                                 |
//! |----------------------------|-------------------------------------------------------|
//! | `Raid0`                    | `raid0`, `0`, `stripe`                                |
//! | `Raid1`                    | `raid1`, `1`, `mirror`                                |
//! | `Raid4`                    | `raid4`, `4`                                          |
//! | `Raid5(LeftSymmetric)`     | `raid5`, `5`, `raid5-left-symmetric`, `raid5-ls`      |
//! | `Raid5(LeftAsymmetric)`    | `raid5-left-asymmetric`, `raid5-la`                   |
//! | `Raid5(RightSymmetric)`    | `raid5-right-symmetric`, `raid5-rs`                   |
//! | `Raid5(RightAsymmetric)`   | `raid5-right-asymmetric`, `raid5-ra`                  |
//! | `Raid6`                    | `raid6`, `6`                                          |
//! | `Raid10 { copies: 2 }`     | `raid10`, `10`, `raid10-n2`                           |
//! | `Raid10 { copies: c }`     | `raid10-nC` (md's "near" layout name, e.g. `raid10-n3`) |
//! | `Raid01`                   | `raid01`, `raid0+1`                                   |
//! | `Raid50 { groups: 2 }`     | `raid50`, `raid50-g2`                                 |
//! | `Raid50 { groups: g }`     | `raid50-gG` (e.g. `raid50-g3`)                        |
//! | `Raid60 { groups: g }`     | `raid60`, `raid60-gG` (as RAID-50)                    |
//! | `Erasure { k, m }`         | `K+M` (e.g. `4+2`)                                    |
//!
//! The RAID-5 layout words are mdadm's `--layout` names.

use std::fmt;
use std::str::FromStr;

use super::error::LayoutError;

/// Where RAID-5 puts parity and data in each stripe, exactly as Linux md
/// (`drivers/md/raid5.c`, `raid5_compute_sector`). With `n` members and
/// stripe number `s`, parity member `pd` and the member of data chunk `i`
/// (`0 ≤ i < n − 1`) are:
///
/// | layout            | `pd`                | data chunk `i`                     |
/// |-------------------|---------------------|------------------------------------|
/// | `LeftAsymmetric`  | `n − 1 − (s mod n)` | `i` if `i < pd`, else `i + 1`      |
/// | `RightAsymmetric` | `s mod n`           | `i` if `i < pd`, else `i + 1`      |
/// | `LeftSymmetric`   | `n − 1 − (s mod n)` | `(pd + 1 + i) mod n`               |
/// | `RightSymmetric`  | `s mod n`           | `(pd + 1 + i) mod n`               |
///
/// "Left" moves parity one member to the left per stripe, starting on the
/// last; "symmetric" continues the data after the parity (so consecutive
/// chunks visit every member in turn, which is why md defaults to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Raid5Layout {
    /// md's default (`ALGORITHM_LEFT_SYMMETRIC`, 2).
    #[default]
    LeftSymmetric,
    /// `ALGORITHM_LEFT_ASYMMETRIC`, 0.
    LeftAsymmetric,
    /// `ALGORITHM_RIGHT_SYMMETRIC`, 3.
    RightSymmetric,
    /// `ALGORITHM_RIGHT_ASYMMETRIC`, 1.
    RightAsymmetric,
}

impl Raid5Layout {
    /// All four layouts, for exhaustive tests and help texts.
    pub const ALL: [Raid5Layout; 4] = [
        Raid5Layout::LeftSymmetric,
        Raid5Layout::LeftAsymmetric,
        Raid5Layout::RightSymmetric,
        Raid5Layout::RightAsymmetric,
    ];

    /// md's `ALGORITHM_*` number (`drivers/md/raid5.h`), also used on disk.
    pub fn md_algorithm(self) -> u8 {
        match self {
            Raid5Layout::LeftAsymmetric => 0,
            Raid5Layout::RightAsymmetric => 1,
            Raid5Layout::LeftSymmetric => 2,
            Raid5Layout::RightSymmetric => 3,
        }
    }

    /// The layout with md's `ALGORITHM_*` number, if it is one of these four.
    pub fn from_md_algorithm(n: u32) -> Option<Raid5Layout> {
        match n {
            0 => Some(Raid5Layout::LeftAsymmetric),
            1 => Some(Raid5Layout::RightAsymmetric),
            2 => Some(Raid5Layout::LeftSymmetric),
            3 => Some(Raid5Layout::RightSymmetric),
            _ => None,
        }
    }

    /// mdadm's `--layout` word.
    pub fn name(self) -> &'static str {
        match self {
            Raid5Layout::LeftSymmetric => "left-symmetric",
            Raid5Layout::LeftAsymmetric => "left-asymmetric",
            Raid5Layout::RightSymmetric => "right-symmetric",
            Raid5Layout::RightAsymmetric => "right-asymmetric",
        }
    }

    fn from_name(s: &str) -> Option<Raid5Layout> {
        Some(match s {
            "left-symmetric" | "ls" => Raid5Layout::LeftSymmetric,
            "left-asymmetric" | "la" => Raid5Layout::LeftAsymmetric,
            "right-symmetric" | "rs" => Raid5Layout::RightSymmetric,
            "right-asymmetric" | "ra" => Raid5Layout::RightAsymmetric,
            _ => return None,
        })
    }
}

impl fmt::Display for Raid5Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A redundancy scheme. Placement details are in the [module docs](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Striping, no redundancy.
    Raid0,
    /// Every member holds the same data (n-way mirror).
    Raid1,
    /// Striping with parity always on the last member.
    Raid4,
    /// Striping with one rotating parity chunk.
    Raid5(Raid5Layout),
    /// Striping with two rotating parity chunks P and Q (md left-symmetric).
    Raid6,
    /// Stripe over mirrors of `copies` adjacent members (md "near" layout).
    Raid10 { copies: usize },
    /// Mirror of two striped halves.
    Raid01,
    /// Stripe over `groups` RAID-5 groups (each left-symmetric).
    Raid50 { groups: usize },
    /// Stripe over `groups` RAID-6 groups.
    Raid60 { groups: usize },
    /// `k` data and `m` parity chunks per stripe, parity rotating like RAID-6.
    Erasure { k: usize, m: usize },
}

/// A level as stored in a superblock: a stable code and two parameters.
///
/// | level       | `code` | `params`                      |
/// |-------------|--------|-------------------------------|
/// | RAID-0      | 0      | `[0, 0]`                      |
/// | RAID-1      | 1      | `[0, 0]`                      |
/// | RAID-4      | 4      | `[0, 0]`                      |
/// | RAID-5      | 5      | `[md algorithm number, 0]`    |
/// | RAID-6      | 6      | `[0, 0]`                      |
/// | RAID-10     | 10     | `[copies, 0]`                 |
/// | RAID-01     | 11     | `[0, 0]` (01 would read as 1) |
/// | RAID-50     | 50     | `[groups, 0]`                 |
/// | RAID-60     | 60     | `[groups, 0]`                 |
/// | erasure k+m | 200    | `[k, m]`                      |
///
/// These numbers never change meaning; new levels get new codes. Parameters
/// are never above a few hundred for a level that passes
/// [`Geometry::new`](super::Geometry::new); a parameter beyond `u32` is stored
/// as `u32::MAX`, which no geometry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LevelCode {
    pub code: u8,
    pub params: [u32; 2],
}

const CODE_RAID0: u8 = 0;
const CODE_RAID1: u8 = 1;
const CODE_RAID4: u8 = 4;
const CODE_RAID5: u8 = 5;
const CODE_RAID6: u8 = 6;
const CODE_RAID10: u8 = 10;
const CODE_RAID01: u8 = 11;
const CODE_RAID50: u8 = 50;
const CODE_RAID60: u8 = 60;
const CODE_ERASURE: u8 = 200;

fn param(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

fn unparam(x: u32) -> usize {
    // usize is at least 32 bits on every target raidfs builds for.
    usize::try_from(x).unwrap_or(usize::MAX)
}

impl Level {
    /// The on-disk code of this level; see [`LevelCode`].
    pub fn to_code(&self) -> LevelCode {
        let (code, params) = match *self {
            Level::Raid0 => (CODE_RAID0, [0, 0]),
            Level::Raid1 => (CODE_RAID1, [0, 0]),
            Level::Raid4 => (CODE_RAID4, [0, 0]),
            Level::Raid5(layout) => (CODE_RAID5, [u32::from(layout.md_algorithm()), 0]),
            Level::Raid6 => (CODE_RAID6, [0, 0]),
            Level::Raid10 { copies } => (CODE_RAID10, [param(copies), 0]),
            Level::Raid01 => (CODE_RAID01, [0, 0]),
            Level::Raid50 { groups } => (CODE_RAID50, [param(groups), 0]),
            Level::Raid60 { groups } => (CODE_RAID60, [param(groups), 0]),
            Level::Erasure { k, m } => (CODE_ERASURE, [param(k), param(m)]),
        };
        LevelCode { code, params }
    }

    /// The level stored as `code`. Unknown codes, unknown RAID-5 algorithms
    /// and non-zero unused parameters are refused: a superblock carrying them
    /// is corrupt or from a newer version, and guessing would misplace data.
    /// Parameter ranges are checked by [`Geometry::new`](super::Geometry::new).
    pub fn from_code(code: LevelCode) -> Result<Level, LayoutError> {
        let bad = || LayoutError::UnknownCode {
            code: code.code,
            params: code.params,
        };
        let [a, b] = code.params;
        let level = match (code.code, b) {
            (CODE_RAID0, 0) if a == 0 => Level::Raid0,
            (CODE_RAID1, 0) if a == 0 => Level::Raid1,
            (CODE_RAID4, 0) if a == 0 => Level::Raid4,
            (CODE_RAID5, 0) => Level::Raid5(Raid5Layout::from_md_algorithm(a).ok_or_else(bad)?),
            (CODE_RAID6, 0) if a == 0 => Level::Raid6,
            (CODE_RAID10, 0) => Level::Raid10 { copies: unparam(a) },
            (CODE_RAID01, 0) if a == 0 => Level::Raid01,
            (CODE_RAID50, 0) => Level::Raid50 { groups: unparam(a) },
            (CODE_RAID60, 0) => Level::Raid60 { groups: unparam(a) },
            (CODE_ERASURE, _) => Level::Erasure {
                k: unparam(a),
                m: unparam(b),
            },
            _ => return Err(bad()),
        };
        Ok(level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Level::Raid0 => f.write_str("raid0"),
            Level::Raid1 => f.write_str("raid1"),
            Level::Raid4 => f.write_str("raid4"),
            Level::Raid5(Raid5Layout::LeftSymmetric) => f.write_str("raid5"),
            Level::Raid5(layout) => write!(f, "raid5-{layout}"),
            Level::Raid6 => f.write_str("raid6"),
            Level::Raid10 { copies: 2 } => f.write_str("raid10"),
            Level::Raid10 { copies } => write!(f, "raid10-n{copies}"),
            Level::Raid01 => f.write_str("raid01"),
            Level::Raid50 { groups: 2 } => f.write_str("raid50"),
            Level::Raid50 { groups } => write!(f, "raid50-g{groups}"),
            Level::Raid60 { groups: 2 } => f.write_str("raid60"),
            Level::Raid60 { groups } => write!(f, "raid60-g{groups}"),
            Level::Erasure { k, m } => write!(f, "{k}+{m}"),
        }
    }
}

/// A decimal count: ASCII digits only (no sign, no blanks), fitting `usize`.
fn count(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for Level {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Level, LayoutError> {
        let name = s.trim().to_ascii_lowercase();
        let unknown = || LayoutError::UnknownName(s.to_string());
        let level = match name.as_str() {
            "raid0" | "0" | "stripe" => Level::Raid0,
            "raid1" | "1" | "mirror" => Level::Raid1,
            "raid4" | "4" => Level::Raid4,
            "raid5" | "5" => Level::Raid5(Raid5Layout::LeftSymmetric),
            "raid6" | "6" => Level::Raid6,
            "raid10" | "10" => Level::Raid10 { copies: 2 },
            "raid01" | "raid0+1" => Level::Raid01,
            "raid50" => Level::Raid50 { groups: 2 },
            "raid60" => Level::Raid60 { groups: 2 },
            other => {
                if let Some(layout) = other.strip_prefix("raid5-") {
                    Level::Raid5(Raid5Layout::from_name(layout).ok_or_else(unknown)?)
                } else if let Some(c) = other.strip_prefix("raid10-n") {
                    Level::Raid10 {
                        copies: count(c).ok_or_else(unknown)?,
                    }
                } else if let Some(g) = other.strip_prefix("raid50-g") {
                    Level::Raid50 {
                        groups: count(g).ok_or_else(unknown)?,
                    }
                } else if let Some(g) = other.strip_prefix("raid60-g") {
                    Level::Raid60 {
                        groups: count(g).ok_or_else(unknown)?,
                    }
                } else if let Some((k, m)) = other.split_once('+') {
                    Level::Erasure {
                        k: count(k).ok_or_else(unknown)?,
                        m: count(m).ok_or_else(unknown)?,
                    }
                } else {
                    return Err(unknown());
                }
            }
        };
        Ok(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_the_documented_levels() {
        let cases = [
            ("raid0", Level::Raid0),
            ("STRIPE", Level::Raid0),
            (" mirror ", Level::Raid1),
            ("raid4", Level::Raid4),
            ("5", Level::Raid5(Raid5Layout::LeftSymmetric)),
            ("raid5-la", Level::Raid5(Raid5Layout::LeftAsymmetric)),
            (
                "raid5-right-asymmetric",
                Level::Raid5(Raid5Layout::RightAsymmetric),
            ),
            ("raid6", Level::Raid6),
            ("raid10", Level::Raid10 { copies: 2 }),
            ("raid10-n3", Level::Raid10 { copies: 3 }),
            ("raid0+1", Level::Raid01),
            ("raid50-g3", Level::Raid50 { groups: 3 }),
            ("raid60", Level::Raid60 { groups: 2 }),
            ("4+2", Level::Erasure { k: 4, m: 2 }),
        ];
        for (name, level) in cases {
            assert_eq!(name.parse::<Level>(), Ok(level), "{name}");
        }
    }

    #[test]
    fn junk_names_are_refused() {
        for name in [
            "",
            "raid",
            "raid7",
            "raid5-",
            "raid5-xx",
            "raid10-n",
            "raid10-n-1",
            "raid10-n+2",
            "4+",
            "+2",
            "4+2+1",
            "a+b",
            "-1+2",
            "raid50-g",
            "99999999999999999999999+1",
        ] {
            assert!(
                matches!(name.parse::<Level>(), Err(LayoutError::UnknownName(_))),
                "{name:?} should be refused"
            );
        }
    }

    #[test]
    fn raid5_codes_are_md_algorithm_numbers() {
        for layout in Raid5Layout::ALL {
            let code = Level::Raid5(layout).to_code();
            assert_eq!(code.code, 5);
            assert_eq!(code.params[0], u32::from(layout.md_algorithm()));
        }
        assert_eq!(Raid5Layout::LeftSymmetric.md_algorithm(), 2);
        assert_eq!(Raid5Layout::LeftAsymmetric.md_algorithm(), 0);
    }

    #[test]
    fn unused_parameters_must_be_zero() {
        let code = LevelCode {
            code: 6,
            params: [1, 0],
        };
        assert!(Level::from_code(code).is_err());
        let code = LevelCode {
            code: 10,
            params: [2, 1],
        };
        assert!(Level::from_code(code).is_err());
        let code = LevelCode {
            code: 5,
            params: [4, 0],
        };
        assert!(Level::from_code(code).is_err());
    }
}
