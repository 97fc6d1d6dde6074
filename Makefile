# Thin wrapper over CMake. The two commands a new user needs:
#   make run    install what is missing, build, start the demo app and moongate on ./init.lua
#   make test   install what is missing, build, run every test (also under ASan+UBSan)

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
PORT       ?= 8080
PYTHON     ?= /usr/bin/python3

# Debian packages: build dependencies, then the real servers the tests run against.
BUILD_PKGS = cmake gcc make pkg-config libuv1-dev libluajit2-5.1-dev node-llhttp
TEST_PKGS  = python3 python3-pytest curl uwsgi-core uwsgi-plugin-python3 libscgi-perl python3-django
BENCH_PKGS = wrk nginx-light libnginx-mod-http-lua apache2

.PHONY: all deps deps-bench build asan run test unit e2e test-asan bench clean

all: build

deps:
	@./scripts/deps.sh $(BUILD_PKGS) $(TEST_PKGS)

deps-bench:
	@./scripts/deps.sh $(BUILD_PKGS) $(TEST_PKGS) $(BENCH_PKGS)

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMG_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	@./scripts/run-demo.sh $(BUILD) $(PORT)

unit: build
	@cd $(BUILD) && ctest --output-on-failure

e2e: build
	@MG_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/e2e

test-asan: asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure
	@MG_BUILD=$(abspath $(ASAN_BUILD)) MG_SANITIZED=1 $(PYTHON) -m pytest -q tests/e2e

test: build asan
	@echo "== unit tests (release)"
	@cd $(BUILD) && ctest --output-on-failure
	@echo "== end-to-end tests (release)"
	@MG_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/e2e
	@echo "== unit tests (ASan+UBSan)"
	@cd $(ASAN_BUILD) && ctest --output-on-failure
	@echo "== end-to-end tests (ASan+UBSan)"
	@MG_BUILD=$(abspath $(ASAN_BUILD)) MG_SANITIZED=1 $(PYTHON) -m pytest -q tests/e2e

bench: deps-bench build
	@./bench/run.sh $(BUILD) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
