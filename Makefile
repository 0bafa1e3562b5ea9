# Builds, tests and packages `left`. `make help` lists the targets.
CARGO ?= cargo
BIN := target/release/left

.PHONY: all build test fuzz demo clean help

all: build

build: ## release binary for this machine
	$(CARGO) build --release

test: ## unit and integration tests (two real peers on 127.0.0.1)
	$(CARGO) test --release

fuzz: ## a million mutated frames through the decoder (make test runs a few thousand)
	LEFT_FUZZ_FRAMES=1000000 $(CARGO) test --release --bin left fuzz

demo: build ## two peers on this machine: a file put into one appears in the other
	bash tests/demo.sh $(BIN)

clean:
	$(CARGO) clean
	rm -rf demo

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# ---- Tiny Core packaging: static musl builds, left.tcz, VM test (issue 3) ----
