# Connect — build, test, lint, fuzz and bench.
# `make test` is the README's test command and what CI runs (with `make lint`).

GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
BIN       := bin
FUZZTIME  ?= 60s
FUZZMINIMIZE ?= 10s
# CI fuzzes by count, not time: a time-bound run can fail with "context
# deadline exceeded" when the deadline falls during minimization.
SHORTFUZZ ?= 150000x
PKGS      := ./...

# Every fuzz target, as package:target.
FUZZ_TARGETS := \
	./wire:FuzzDecodeFrame \
	./wire:FuzzDecodeMessage \
	./wire:FuzzStreamConn \
	./config:FuzzParse \
	./bearers:FuzzParseEndpoint \
	./bearers/dgram:FuzzGROSegment \
	./internal/xmlpos:FuzzRead \
	./services/servicefile:FuzzParse \
	./services:FuzzDecodeValue \
	./services:FuzzUnmarshalJSON \
	./resume:FuzzDecodeControl \
	./resume:FuzzAccept \
	./internal/persist:FuzzDecode \
	./session:FuzzDecode \
	./session:FuzzTaggedDatagram \
	./client:FuzzTaggedIntake \
	./core:FuzzRelayFirstFrame \
	./core:FuzzUDPRelayDatagram \
	./client:FuzzLinkHandshake \
	./services/serviceplugin:FuzzPathType \
	./routing:FuzzParse \
	./tunnel:FuzzDecodeOpen \
	./tunnel:FuzzParseProxyV2

.PHONY: all build test test-short lint fuzz fuzz-short soak bench bench-udp bench-tunnel generate clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/connectserver ./cmd/connectclient ./cmd/remoteservicerunner
	$(GO) build -o $(BIN)/connect-bearer-ws ./examples/wsbearer/cmd/connect-bearer-ws
	$(GO) build -o $(BIN)/echoservice ./examples/echoservice

# Unit and integration tests with the race detector, then a short fuzz run
# of every decoder.
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(MAKE) fuzz-short

test-short:
	$(GO) test -count=1 -short $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@command -v $(GOBIN)/staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$(GOBIN)/staticcheck $(PKGS)

fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test $$pkg -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) || exit 1; done

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(SHORTFUZZ) FUZZMINIMIZE=200x

# The long soak: real applications (redis-cli, ssh) through the tunnel
# while the link is cut SOAKCUTS times each, in process (./tunnel) and through
# connectserver and connectclient tunnel (./integration), and method calls
# and events through the real binaries while the link is broken SOAKCUTS
# times. `make test` runs 20, 10 and 50.
SOAKCUTS ?= 500
soak:
	CONNECT_REQUIRE_SOAK=1 CONNECT_SOAK_CUTS=$(SOAKCUTS) $(GO) test -count=1 -timeout 60m -run 'Soak' -v ./tunnel/
	CONNECT_REQUIRE_SOAK=1 CONNECT_SOAK_CUTS=$(SOAKCUTS) $(GO) test -count=1 -timeout 60m -run 'TunnelSoak' -v ./integration/
	CONNECT_RESUME_BREAKS=$(SOAKCUTS) $(GO) test -count=1 -timeout 60m -run 'TestResumeLinkBreaks$$' -v ./integration/

# Benchmarks print ratios against raw baselines measured in the same run;
# figures are recorded in docs/BENCHMARKS.md.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./wire
	$(GO) run ./bench/bearerbench
	$(GO) run ./bench/udprate

bench-udp:
	$(GO) run ./bench/udprate

# The tunnel against chained socat relays, a resume session against raw TCP,
# and the time from a restored link to the first new message (needs socat).
bench-tunnel:
	$(GO) run ./bench/tunnelbench

# What diagnostics cost: calls and bulk transfer, diagnostics on vs off,
# interleaved in one run (docs/BENCHMARKS.md, "Diagnostics").
bench-diag:
	$(GO) run ./bench/diagcost

# Regenerate the gRPC code (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
generate:
	PATH="$(GOBIN):$$PATH" $(GO) generate ./...

clean:
	rm -rf $(BIN)
