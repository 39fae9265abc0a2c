# ckm uses DuckDB's Arrow interface, which duckdb-go compiles only with this build tag.
GOFLAGS_CKM := -tags=duckdb_arrow
export CGO_ENABLED := 1

.PHONY: build test browser bench bench-kafka sample clean

build:
	go build $(GOFLAGS_CKM) -o bin/ckm ./cmd/ckm

test: browser
	go test $(GOFLAGS_CKM) -count=1 -timeout 20m ./...

# The report test renders in headless Chromium: install Debian's package when none is found.
browser:
	@if [ -z "$$CKM_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
	   && ! command -v google-chrome >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report rendering test"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	  { echo "could not install chromium: install it (apt-get install chromium) or set CKM_CHROMIUM"; exit 1; }; \
	fi

# The issue's benchmark: 1M customers / ~15M orders (generated once into bench-data/).
bench: build
	bin/ckm bench --customers 1000000 --dir bench-data

# Kafka → DuckDB ingest against kafka-go's raw consume rate, same broker and process.
bench-kafka:
	go test $(GOFLAGS_CKM) -run '^$$' -bench IngestVersusRawConsume -benchtime 3x ./connectors/kafka

# Regenerate the shipped sample data.
sample: build
	bin/ckm generate --customers 2000 --seed 42 --dirty 0.002 --gzip --out data/sample
	rm -f data/sample/truth.csv.gz

clean:
	rm -rf bin bench-data data/publish examples/*/publish data/*.duckdb data/*.duckdb.wal data/.duckdb_extensions data/.duckdb_tmp examples/kafka/data
