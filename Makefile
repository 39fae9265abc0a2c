# ckm uses DuckDB's Arrow interface, which duckdb-go compiles only with this build tag.
GOFLAGS_CKM := -tags=duckdb_arrow
export CGO_ENABLED := 1

.PHONY: build test fuzz bench bench-kafka bench-postgres sample clean

# Every binary the README names.
build:
	go build $(GOFLAGS_CKM) -o bin/ckm ./cmd/ckm
	go build $(GOFLAGS_CKM) -o bin/ckm-devkafka ./cmd/ckm-devkafka

# Every test under the race detector, then the file connector's fuzz test for a bounded number of
# inputs (about 20 s here).
# The report's rendering tests need a Chromium; without one they are skipped, saying how to
# install it. (The ckm binary that cmd/ckm's tests start as a process is built without -race: the
# scheduler, service and CLI code it runs is race-tested in process by their own packages.)
test:
	go test $(GOFLAGS_CKM) -race -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=500x

# Broken and hostile bytes through the file connector and the mapping (longer: make fuzz
# FUZZTIME=20000x). A count, not a duration: Go 1.26's fuzzer can fail a run that ends on a
# duration with "context deadline exceeded" and no failing input (go.dev/issue/75804, fixed in 1.27).
FUZZTIME ?= 2000x
fuzz:
	go test $(GOFLAGS_CKM) -run '^$$' -fuzz '^FuzzFileConnector$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 20x ./connectors/file

# The benchmark: 1M customers / ~15M orders (generated once into bench-data/).
bench: build
	bin/ckm bench --customers 1000000 --dir bench-data

# Kafka → DuckDB ingest against kafka-go's raw consume rate, same broker and process.
bench-kafka:
	go test $(GOFLAGS_CKM) -run '^$$' -bench IngestVersusRawConsume -benchtime 3x ./connectors/kafka

# PostgreSQL → DuckDB ingest of 1M orders against a bare COPY TO STDOUT of the same rows through
# pgx, same server and process (starts a throwaway PostgreSQL; needs Debian's postgresql).
bench-postgres:
	go test $(GOFLAGS_CKM) -run '^$$' -bench IngestVersusCopy -benchtime 1x ./connectors/postgres

# Regenerate the shipped sample data.
sample: build
	bin/ckm generate --customers 2000 --seed 42 --dirty 0.002 --gzip --out data/sample
	rm -f data/sample/truth.csv.gz

clean:
	rm -rf bin bench-data data/publish examples/*/publish data/*.duckdb data/*.duckdb.wal data/.duckdb_extensions data/.duckdb_tmp examples/kafka/data
