# Strata — two commands: `make run` and `make test` (see README.md).
# Every install step is here, idempotent and quiet when nothing is missing.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# FFmpeg's libraries (and clang for their bindings) build the transcoder; libsrt (Haivision's)
# is SRT ingest: the GnuTLS build libavformat already loads, so one libsrt is in the process;
# the ffmpeg package gives ffplay/ffprobe to watch and the publisher the tests use.
RUN_APT := pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
	libsrt1.5-gnutls libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev ffmpeg
# Chromium runs the web app's end-to-end test (driven by playwright-core from npm).
# GStreamer publishes with rtmp2sink, which ends a stream without unpublishing.
TEST_APT := $(RUN_APT) time bc postgresql python3-prometheus-client python3-m3u8 chromium python3-venv \
	docker-compose gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly openssl
# The latency bench's peer: nginx with the RTMP module (HLS), fed the same stamped stream.
BENCH_APT := nginx libnginx-mod-rtmp wrk
# The cloud-storage tests run against moto's S3 server (PyPI `moto[server]`), installed into a
# virtualenv under .test-tools/ and started by the tests on loopback.
MOTO_VERSION := 5.1.22
MOTO := .test-tools/moto/bin/moto_server
# The API tests also run against a real PostgreSQL: `make postgres` starts Debian's cluster and
# creates a role that may create one database per test.
PG_VERSION := 15
PG_URL := postgres://strata:strata@127.0.0.1:5432/postgres
AS_POSTGRES := $(if $(SUDO),sudo -u postgres,runuser -u postgres --)
CARGO ?= cargo

.PHONY: run test bench deps test-deps postgres fmt lint unit integration node web web-test \
	compose-check fuzz fuzz-deps

# The web app (web/: Svelte + Vite) is rebuilt when its sources or lockfile change. Vite 7
# needs Node.js 20.19 or newer; Debian 12's own nodejs is 18, so an older node is an error
# that says so rather than a broken build.
NODE_MIN := 20.19
WEB_SRC := $(shell find web/src web/public -type f 2>/dev/null) web/index.html \
	web/vite.config.js web/svelte.config.js web/package.json web/package-lock.json

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

deps:
	$(call apt_install,$(RUN_APT))

test-deps:
	$(call apt_install,$(TEST_APT))
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

node:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		echo "installing: nodejs npm"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	@v=$$(node --version | tr -d v); \
	[ "$$(printf '%s\n' $(NODE_MIN) $$v | sort -V | head -1)" = "$(NODE_MIN)" ] || { \
		echo "Node.js $(NODE_MIN)+ is needed to build web/ (found $$v); install a newer Node.js"; exit 1; }

# `npm install --no-save` installs exactly what package-lock.json pins, like `npm ci`; `npm ci`
# itself refuses this lockfile because the registry answers for only some of rollup's optional
# per-platform packages (npm/cli#4828), which the lockfile then lacks.
web/node_modules/.package-lock.json: web/package-lock.json | node
	cd web && npm install --no-save --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SRC)
	cd web && npm run --silent build -- --logLevel warn
	@touch $@

web: web/dist/index.html

web-test: web
	cd web && npx --no-install vitest run

run: deps web
	$(CARGO) build --release --locked
	./target/release/strata serve

fmt: test-deps
	$(CARGO) fmt --all -- --check

lint: test-deps
	$(CARGO) clippy --locked --all-targets -- -D warnings

postgres: test-deps
	@pg_lsclusters -h | grep -q '^$(PG_VERSION) *main ' || $(SUDO) pg_createcluster $(PG_VERSION) main >/dev/null
	@pg_lsclusters -h | grep -q '^$(PG_VERSION) *main .* online ' || $(SUDO) pg_ctlcluster $(PG_VERSION) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
		pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not start: see /var/log/postgresql/"; exit 1; }
	@$(AS_POSTGRES) psql -qAt -c "SELECT 1 FROM pg_roles WHERE rolname='strata'" | grep -q 1 || \
		$(AS_POSTGRES) psql -q -c "CREATE ROLE strata LOGIN CREATEDB PASSWORD 'strata'"

$(MOTO): | test-deps
	python3 -m venv .test-tools/moto
	.test-tools/moto/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)'
	@touch $@

# docker-compose.yml must stay valid; no Docker engine is needed to check it. Docker's compose
# plugin when present, else Debian's docker-compose.
compose-check: test-deps
	@if docker compose version >/dev/null 2>&1; then docker compose config -q; \
		else docker-compose -f docker-compose.yml config -q; fi

# Tests run in two lanes at once: lane B holds test files that publish passthrough streams with
# no transcoder and at most one player in a browser (they mostly wait on real time), lane A
# everything else; every test must pass with both cores busy anyway, and the two lanes keep
# `make test` on a fresh 2-core machine within its 25 minutes. Lane B's output follows lane A's.
# TEST_ALONE runs after both lanes, by itself: three browser players beside a live x264 ladder
# measure distance to live, which a lane's encoders and browsers next to it would decide.
TEST_LANE_B := clips cloud_storage cluster_claims control_api crash_recovery devices dvr \
	dvr_playback fuzz_corpora http_limits mpegts_clock publish_to_playback rtmp_hostile_clients \
	segment_numbers webhooks
TEST_ALONE := low_latency_playback
TEST_LANE_A := $(filter-out $(TEST_LANE_B) $(TEST_ALONE),$(sort $(basename $(notdir $(wildcard tests/*.rs)))))
TEST_ENV := STRATA_TEST_POSTGRES=$(PG_URL) STRATA_TEST_MOTO=$(abspath $(MOTO))

test: test-deps postgres fmt lint web-test compose-check $(MOTO)
	$(TEST_ENV) $(CARGO) test --locked --all-targets --no-run
	@mkdir -p target/tmp; \
	( $(TEST_ENV) $(CARGO) test --locked --no-fail-fast $(addprefix --test ,$(TEST_LANE_B)) \
		>target/tmp/test-lane-b.log 2>&1; echo $$? >target/tmp/test-lane-b.rc ) & \
	$(TEST_ENV) $(CARGO) test --locked --no-fail-fast --lib --bins --benches \
		$(addprefix --test ,$(TEST_LANE_A)); \
	a=$$?; wait; echo "=== lane B: $(TEST_LANE_B)"; cat target/tmp/test-lane-b.log; \
	b=$$(cat target/tmp/test-lane-b.rc); echo "=== alone: $(TEST_ALONE)"; \
	$(TEST_ENV) $(CARGO) test --locked --no-fail-fast $(addprefix --test ,$(TEST_ALONE)); \
	c=$$?; echo "lane A exit $$a, lane B exit $$b, alone exit $$c"; \
	[ $$a -eq 0 ] && [ $$b -eq 0 ] && [ $$c -eq 0 ]

bench: test-deps
	$(call apt_install,$(BENCH_APT))
	$(CARGO) bench --locked --bench packaging
	$(CARGO) build --release --locked
	bash benches/passthrough_vs_ffmpeg.sh
	bash benches/ladder_vs_ffmpeg.sh
	bash benches/latency.sh
	bash benches/origin_vs_nginx.sh
	bash benches/viewers.sh
	bash benches/publishers.sh

# Fuzzing (fuzz/, cargo-fuzz on the nightly toolchain): every target runs FUZZ_SECONDS on one
# core, new inputs land in fuzz/corpus/<target>/, which is then minimized (`cargo fuzz cmin`);
# commit it. A crash stops here with libFuzzer's report and the input in fuzz/artifacts/<target>/:
# copy that input to fuzz/regressions/<target>/ so `make test` replays it. Without a sanitizer:
# the code is safe Rust, and a shared 2-core machine gets several times the executions.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= origin_path origin_range codec_config rtmp_guard flv_demux segmenter rtmp_session \
	mpegts_demux srt_stream_id worker_wire fmp4_demux hls_push_playlist ws_messages rtp_h264 \
	device_messages previews_sheet clip_edge
FUZZ := $(CARGO) +nightly fuzz

fuzz-deps:
	@command -v cargo-fuzz >/dev/null || { echo "installing: cargo-fuzz"; \
		$(CARGO) install cargo-fuzz --locked --quiet; }
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

fuzz: deps fuzz-deps
	$(FUZZ) build -s none
	@mkdir -p fuzz/artifacts
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$t; \
		log=fuzz/artifacts/$$t.log; \
		if ! $(FUZZ) run -s none $$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >$$log 2>&1; then \
			tail -n 40 $$log; echo "$$t: FAILED (full log: $$log)"; exit 1; fi; \
		echo "$$t: $$(grep -o 'number_of_executed_units: [0-9]*' $$log | grep -o '[0-9]*$$') executions in $(FUZZ_SECONDS) s"; \
		$(FUZZ) cmin -s none $$t >$$log.cmin 2>&1 || { tail -n 20 $$log.cmin; exit 1; }; \
	done
