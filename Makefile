# raidfs — a new user runs `./scripts/demo.sh` (or `make demo`) and `make test`.
# Both install what they need (as root, on Debian) and work from a fresh clone.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all demo deps build build-arm install test test-unit test-arm lint fmt bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

## Install the binaries (release) and systemd units under /usr/local.
install: deps
	@scripts/install.sh

## The main job: a RAID-5 demo array over four file-backed members, mounted on ./demo/array.
demo: deps
	@scripts/demo.sh

## Every test: lint, the workspace's unit/integration/end-to-end tests
## (with a local S3 server), and raid-core under aarch64 emulation.
test: deps
	@scripts/test.sh

test-unit: deps
	$(CARGO) test --workspace

test-arm:
	@scripts/test-arm.sh

## Cross-build every binary for the Raspberry Pi 4 (aarch64-unknown-linux-gnu);
## test-arm installs the cross toolchain. The C parts of the TLS stack need CC.
build-arm: test-arm
	CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	$(CARGO) build --release --workspace --bins --target aarch64-unknown-linux-gnu

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks side by side with their anchors (snapraid -T, plain directories,
## aws cli / rclone); prints ratios. Not part of `make test`.
bench: deps
	@scripts/bench.sh

## Unmounts and removes the demo (never `rm -rf` through a mounted array), then cargo clean.
clean:
	@scripts/demo.sh clean
	$(CARGO) clean
