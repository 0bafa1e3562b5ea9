# Builds, tests and packages `left`. `make help` lists the targets.
CARGO ?= cargo
BIN := target/release/left

.PHONY: all build test fuzz demo clean help

all: build

build: ## release binary for this machine
	$(CARGO) build --release

TEST_THREADS ?= 4

test: ## unit and integration tests (two real peers on 127.0.0.1; TEST_THREADS=4 at once: they mostly wait)
	$(CARGO) test --release -- --test-threads=$(TEST_THREADS)

fuzz: ## a million mutated frames through the decoder (make test runs a few thousand)
	LEFT_FUZZ_FRAMES=1000000 $(CARGO) test --release --bin left fuzz

demo: build ## two peers on this machine: a file put into one appears in the other
	bash tests/demo.sh $(BIN)

clean:
	$(CARGO) clean
	rm -rf target/demo

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# ---- Tiny Core packaging: static musl builds, left.tcz, VM test (issue 3; piCore: issue 21) ----
ARCH ?= x86_64
# make static builds every architecture unless ARCH is given.
STATIC_ARCHS := $(if $(filter command line environment,$(origin ARCH)),$(ARCH),x86_64 x86 aarch64)

.PHONY: static tcz tcz-all vm-test powercut large-test tinycore-deps

static: ## static musl binaries (x86_64, i686, aarch64; ARCH=... for one), stripped, sizes printed
	bash tinycore/build-static.sh $(STATIC_ARCHS)

tcz: ## left.tcz, .info, .list, .md5.txt, .zsync in target/tcz/ARCH (ARCH=x86_64, x86 or aarch64)
	bash tinycore/build-tcz.sh $(ARCH)

tcz-all: ## left.tcz for x86_64, x86 and aarch64 (piCore64)
	bash tinycore/build-tcz.sh x86_64
	bash tinycore/build-tcz.sh x86
	bash tinycore/build-tcz.sh aarch64

# make vm-test: VM a 32-bit x86, VM b x86_64; with ARCH=aarch64, VM a a piCore64-like aarch64 one.
VM_A := $(if $(filter aarch64 arm64,$(ARCH)),aarch64,x86)

vm-test: ## two qemu VMs install left.tcz, start it from bootlocal.sh and sync (ARCH=aarch64: one is aarch64)
	bash tinycore/build-tcz.sh $(VM_A)
	bash tinycore/build-tcz.sh x86_64
	bash tinycore/vm-test/vm-test.sh target/tcz/$(VM_A)/left.tcz target/tcz/x86_64/left.tcz

CUTS ?= 5

powercut: ## the receiver's VM (share on ext4) loses power CUTS times mid-sync (CUTS=20; logs in target/powercut)
	bash tinycore/build-tcz.sh x86_64
	CUTS=$(CUTS) bash tinycore/vm-test/powercut.sh target/tcz/x86_64/left.tcz

large-test: ## the 32-bit binary syncs a 4.4 GiB file on 127.0.0.1 (needs ~5 GiB of disk)
	bash tinycore/build-static.sh x86
	bash tinycore/large-file-test.sh target/static/x86/left

tinycore-deps: ## as root: apt packages and rustup targets for the targets above
	bash tinycore/ci-deps.sh

# piCore64: aarch64 binaries linked by the toolchain's rust-lld, run under qemu-user (no binfmt
# needed: cargo's runner, set here rather than in a config folder) with the CPU model of the
# Pi 3 and Zero 2 W (Cortex-A53, ARMv8.0), so that no newer instruction goes unnoticed.
QEMU_AARCH64 ?= $(firstword $(shell command -v qemu-aarch64-static qemu-aarch64 2>/dev/null))
QEMU_CPU ?= cortex-a53
AARCH64_ENV = CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=$(QEMU_AARCH64) QEMU_CPU=$(QEMU_CPU)

.PHONY: test-aarch64 interop-test

test-aarch64: ## the unit tests built for aarch64 (musl), run under qemu-user
	@test -n "$(QEMU_AARCH64)" || { echo "test-aarch64: qemu-aarch64 missing (apt-get install qemu-user-static)"; exit 1; }
	@rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
	$(AARCH64_ENV) $(CARGO) test --release --target aarch64-unknown-linux-musl --bin left

interop-test: ## an aarch64 left (under qemu-user) and an x86_64 left sync both ways on 127.0.0.1
	bash tinycore/build-static.sh x86_64 aarch64
	QEMU_AARCH64=$(QEMU_AARCH64) QEMU_CPU=$(QEMU_CPU) bash tinycore/interop-test.sh target/static/x86_64/left target/static/aarch64/left

# ---- Benchmark: the paper's test plan against rsync and syncthing (issue 6) ----
.PHONY: bench

# The benchmark runs the binary Tiny Core gets (static musl); LEFT_BIN=target/release/left for
# the glibc build.
LEFT_BIN ?= target/static/x86_64/left

bench: ## as root: paper's tests in 2 netns vs rsync (SIZE_MB=500 RATE=100mbit SCALE_FILES=0 ...)
	@if [ "$(LEFT_BIN)" = target/static/x86_64/left ]; then bash tinycore/build-static.sh x86_64; else $(CARGO) build --release; fi
	SIZE_MB=$(SIZE_MB) RATE=$(RATE) SCALE_FILES=$(SCALE_FILES) IDLE_SECS=$(IDLE_SECS) \
	SYNCTHING=$(SYNCTHING) STEPS=$(STEPS) LEFT_BIN=$(LEFT_BIN) bash tests/bench/bench.sh

# ---- Chaos: randomized model-based test with partitions and faults (issue 17) ----
.PHONY: chaos

SEEDS ?= 200
PEERS ?= 3
TOPO ?= both
SEED_BASE ?= 1
JOBS ?= 2
SHRINK ?= 1
SKIP ?=

chaos: ## random schedules of edits, partitions, kills (SEEDS=200 PEERS=3|5 TOPO=mesh|chain|both SEED_BASE=1 JOBS=2 SHRINK=1 SKIP=types,dirchmod)
	LEFT_CHAOS_SEEDS=$(SEEDS) LEFT_CHAOS_PEERS=$(PEERS) LEFT_CHAOS_TOPO=$(TOPO) LEFT_CHAOS_JOBS=$(JOBS) \
	LEFT_CHAOS_SEED_BASE=$(SEED_BASE) LEFT_CHAOS_SHRINK=$(SHRINK) LEFT_CHAOS_SKIP=$(SKIP) \
	$(CARGO) test --release --test chaos -- --nocapture chaos
