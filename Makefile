# Aerie's front door. `make demo` and `make test` work on a fresh Debian 12
# machine as root: each installs what is missing, builds, then runs.
JOBS ?= $(shell nproc)

.PHONY: all setup build demo test unit fuzz bench asan clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake --preset release >/dev/null
	@cmake --build build -j$(JOBS)

demo: build
	@bash scripts/demo.sh

# Every test: unit, integration and tool tests through CTest, then a short
# fuzzing run of every untrusted-input parser.
test: build
	@ctest --test-dir build --output-on-failure -j$(JOBS)
	@bash scripts/fuzz-smoke.sh

unit: build
	@ctest --test-dir build --output-on-failure -j$(JOBS)

fuzz: setup
	@bash scripts/fuzz-smoke.sh

# Release build, then every benchmark; each writes build/bench/<name>.json.
bench: build
	@bash scripts/bench.sh

# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan: setup
	@cmake --preset asan >/dev/null
	@cmake --build build-asan -j$(JOBS)
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir build-asan --output-on-failure -j$(JOBS)

clean:
	rm -rf build build-asan build-fuzz
