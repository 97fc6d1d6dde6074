# Thin wrapper over CMake. The two commands a new user needs:
#   make run    install what is missing, build, start the demo app and moongate on ./init.lua
#   make test   install what is missing, build, run every test (also under ASan+UBSan)

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
PORT       ?= 8080
PYTHON     ?= /usr/bin/python3

# Debian packages: build dependencies, then the real servers the tests run against.
BUILD_PKGS = cmake gcc make pkg-config libuv1-dev libluajit2-5.1-dev node-llhttp libssl-dev zlib1g-dev lua-cjson libsystemd-dev clang libclang-rt-14-dev libpcre2-dev libnghttp2-dev libdeflate-dev libbrotli-dev libzstd-dev libc-ares-dev
TEST_PKGS  = python3 python3-pytest curl openssl man-db valgrind uwsgi-core uwsgi-plugin-python3 libscgi-perl python3-django redis-server apache2 strace nginx-light libnginx-mod-http-lua memcached dnsmasq-base python3-websockets lua-nginx-redis lua-nginx-redis-connector lua-nginx-memcached lua-nginx-cookie lua-nginx-string lua-nginx-dns lua-nginx-websocket lua-resty-lrucache nghttp2-client python3-h2 chromium chromium-driver python3-selenium python3-brotli python3-zstandard python3-prometheus-client
BENCH_PKGS = wrk nginx-light libnginx-mod-http-lua nghttp2-client

.PHONY: all deps deps-bench build asan fuzz-build fuzz fuzz-smoke run test unit e2e test-asan bench soak valgrind clean install layering

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 300
FUZZ_TARGETS  = fuzz_http fuzz_h2 fuzz_cgi_parse fuzz_path fuzz_config fuzz_import fuzz_re fuzz_codec fuzz_proxy fuzz_traceparent

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

fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMG_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(FUZZ_TARGETS)

# Each target for FUZZ_SECONDS, growing its corpus in tests/fuzz/corpus/<name>; a crash stops
# it and leaves the input as crash-* for a regression test.
fuzz: fuzz-build
	@./scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	@./scripts/fuzz.sh $(FUZZ_BUILD) 10 $(FUZZ_TARGETS)

run: build
	@./scripts/run-demo.sh $(BUILD) $(PORT)

unit: build
	@cd $(BUILD) && ctest --output-on-failure

e2e: build
	@MG_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/e2e

test-asan: asan
	@cd $(ASAN_BUILD) && ctest --output-on-failure
	@MG_BUILD=$(abspath $(ASAN_BUILD)) MG_SANITIZED=1 $(PYTHON) -m pytest -q tests/e2e

test: build asan fuzz-build
	@echo "== layering (docs/architecture.md: no cycle among units, calls by the folder table, units within 1,000 lines)"
	@$(PYTHON) scripts/layering.py $(BUILD)
	@echo "== unit tests (release)"
	@cd $(BUILD) && ctest --output-on-failure
	@echo "== unit tests (ASan+UBSan)"
	@cd $(ASAN_BUILD) && ctest --output-on-failure
	@echo "== end-to-end tests, release and ASan+UBSan side by side (each with its own ports and log)"
	@PYTHON=$(PYTHON) ./scripts/e2e-pair.sh $(BUILD) $(ASAN_BUILD)
	@echo "== install into a scratch DESTDIR, run the installed binary"
	@./scripts/install-test.sh
	@echo "== fuzz smoke (10 s per target)"
	@./scripts/fuzz.sh $(FUZZ_BUILD) 10 $(FUZZ_TARGETS)

# The layering rule read from the object files' symbols (cycles among units, calls against the
# folder table, units over 1,000 lines); also the first step of `make test`.
layering: build
	@$(PYTHON) scripts/layering.py $(BUILD)

bench: deps-bench build
	@./bench/run.sh $(BUILD) $(BENCH_ARGS)

# The end-to-end core cases under valgrind memcheck; fails on any error or definite leak.
valgrind: build
	@rm -rf $(BUILD)/valgrind && mkdir -p $(BUILD)/valgrind
	@MG_BUILD=$(abspath $(BUILD)) MG_VALGRIND=$(abspath $(BUILD))/valgrind $(PYTHON) -m pytest -q tests/e2e/test_core.py
	@./scripts/valgrind-check.sh $(BUILD)/valgrind

soak: build
	@./scripts/soak.sh $(BUILD)

# Installs under PREFIX (default /usr/local) into DESTDIR (default /): docs/deploying.md.
PREFIX ?= /usr/local
INSTALL_BUILD ?= build-install
install: deps
	@cmake -S . -B $(INSTALL_BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(INSTALL_BUILD) -j $(JOBS) --target moongate
	@DESTDIR=$(DESTDIR) cmake --install $(INSTALL_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(INSTALL_BUILD)
