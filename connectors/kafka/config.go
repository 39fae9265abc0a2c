package kafka

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/ckm-dev/ckm/connectors"
)

// Config is a Kafka source's block in config.yaml.
type Config struct {
	Brokers []string `yaml:"brokers" required:"true" example:"[localhost:9092]" doc:"host:port of one or more brokers"`
	Topics  []string `yaml:"topics" required:"true" example:"[orders]" doc:"topics of JSON messages for this source's table"`
	Group   string   `yaml:"group" default:"ckm-<source>" doc:"the consumer group whose committed offsets show ckm's lag to monitoring tools (ckm joins no group)"`
	Start   string   `yaml:"start" default:"earliest" example:"2026-01-01T00:00:00Z" doc:"where a partition never read starts: earliest, latest (what arrives after the first run) or an RFC 3339 time"`

	BatchSize       int    `yaml:"batch_size" default:"100000" doc:"messages per DuckDB transaction"`
	BatchBytes      string `yaml:"batch_bytes" type:"size" default:"64MiB" doc:"or this much payload per transaction, whichever comes first; at most 1GiB"`
	FlushInterval   string `yaml:"flush_interval" type:"duration" default:"5s" doc:"continuous ingest (ckm ingest --follow) commits at least this often"`
	MaxMessageBytes string `yaml:"max_message_bytes" type:"size" default:"1MiB" doc:"larger messages are dead-lettered"`

	SessionTimeout string `yaml:"session_timeout" type:"duration" doc:"no longer used: ckm joins no group (accepted so older configs load)"`
	ConnectTimeout string `yaml:"connect_timeout" type:"duration" default:"30s" doc:"how long unreachable brokers are retried before the run fails"`

	TLS  TLS  `yaml:"tls" doc:"encrypted connections to the brokers"`
	SASL SASL `yaml:"sasl" doc:"authentication to the brokers"`
}

// TLS configures encrypted connections to the brokers.
type TLS struct {
	Enabled            bool   `yaml:"enabled" default:"false" doc:"connect with TLS"`
	CAFile             string `yaml:"ca_file" doc:"PEM file of the CAs to trust; default: the system's roots"`
	CertFile           string `yaml:"cert_file" doc:"client certificate for mutual TLS, PEM"`
	KeyFile            string `yaml:"key_file" doc:"the client certificate's key, PEM"`
	ServerName         string `yaml:"server_name" doc:"the name to verify the brokers' certificates against"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" default:"false" doc:"accept any certificate (tests only)"`
}

// SASL authenticates to the brokers. The password is never written in config: it is read
// from the environment variable PasswordEnv when the source opens, and never logged.
type SASL struct {
	Mechanism   string `yaml:"mechanism" example:"SCRAM-SHA-512" doc:"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (any case)"`
	Username    string `yaml:"username" doc:"the SASL user"`
	PasswordEnv string `yaml:"password_env" secret:"true" example:"KAFKA_PASSWORD" doc:"the environment variable that holds the password"`
}

var mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// settings are the parsed, defaulted values of a Config.
type settings struct {
	group                       string
	start                       string
	startTime                   time.Time
	batchSize                   int
	batchBytes, maxMessageBytes int
	flushInterval, connect      time.Duration
}

// Validate checks every key it can without contacting the brokers.
func (c *Config) Validate(baseDir string) []connectors.FieldProblem {
	var out []connectors.FieldProblem
	add := func(key, msg, hint string) {
		out = append(out, connectors.FieldProblem{Key: key, Msg: msg, Hint: hint})
	}
	if _, errs := c.settings("source"); len(errs) > 0 {
		for _, e := range errs {
			add(e.key, e.msg, e.hint)
		}
	}
	if c.SASL.Mechanism != "" {
		if !slices.Contains(mechanisms, strings.ToUpper(c.SASL.Mechanism)) {
			add("sasl.mechanism", "unknown mechanism "+c.SASL.Mechanism, "one of "+strings.Join(mechanisms, ", "))
		}
		if c.SASL.Username == "" || c.SASL.PasswordEnv == "" {
			add("sasl", "a SASL mechanism needs username and password_env", "password_env names the environment variable holding the password")
		}
	}
	for key, f := range map[string]string{"tls.ca_file": c.TLS.CAFile, "tls.cert_file": c.TLS.CertFile, "tls.key_file": c.TLS.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(resolve(baseDir, f)); err != nil {
			add(key, err.Error(), "paths are relative to the config file's directory")
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add("tls", "cert_file and key_file go together", "")
	}
	return out
}

type settingError struct{ key, msg, hint string }

// settings parses the config's values, applying defaults, and lists every value it cannot read.
func (c *Config) settings(source string) (settings, []settingError) {
	var errs []settingError
	s := settings{group: cmp.Or(c.Group, "ckm-"+source), start: cmp.Or(strings.ToLower(c.Start), "earliest"),
		batchSize: cmp.Or(c.BatchSize, 100_000)}
	if s.start != "earliest" && s.start != "latest" {
		t, err := time.Parse(time.RFC3339, c.Start)
		if err != nil {
			errs = append(errs, settingError{"start", fmt.Sprintf("cannot read %q", c.Start), "earliest, latest or an RFC 3339 time such as 2026-01-01T00:00:00Z"})
		}
		s.start, s.startTime = "time", t
	}
	if c.BatchSize < 0 {
		errs = append(errs, settingError{"batch_size", "must be positive", ""})
	}
	for _, d := range []struct {
		key, value string
		def        time.Duration
		into       *time.Duration
	}{
		{"flush_interval", c.FlushInterval, 5 * time.Second, &s.flushInterval},
		{"connect_timeout", c.ConnectTimeout, 30 * time.Second, &s.connect},
	} {
		*d.into = d.def
		if d.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.value)
		if err != nil || v <= 0 {
			errs = append(errs, settingError{d.key, fmt.Sprintf("cannot read %q as a duration", d.value), "e.g. 500ms, 10s, 2m"})
			continue
		}
		*d.into = v
	}
	for _, b := range []struct {
		key, value string
		def        int
		into       *int
		parse      func(string) (int, error)
	}{
		{"batch_bytes", c.BatchBytes, 64 << 20, &s.batchBytes, connectors.ParseBatchBytes},
		{"max_message_bytes", c.MaxMessageBytes, 1 << 20, &s.maxMessageBytes, connectors.ParseBytes},
	} {
		*b.into = b.def
		if b.value == "" {
			continue
		}
		v, err := b.parse(b.value)
		if err != nil {
			errs = append(errs, settingError{b.key, err.Error(), "e.g. 512KiB, 1MiB, 64MiB"})
			continue
		}
		*b.into = v
	}
	return s, errs
}

// security builds the TLS config and SASL mechanism the brokers need (nil when they need none).
func (c *Config) security(baseDir string) (*tls.Config, sasl.Mechanism, error) {
	var tc *tls.Config
	if c.TLS.Enabled || c.TLS.CAFile != "" || c.TLS.CertFile != "" {
		tc = &tls.Config{ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(resolve(baseDir, c.TLS.CAFile))
			if err != nil {
				return nil, nil, fmt.Errorf("tls.ca_file: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("tls.ca_file %s holds no PEM certificate", c.TLS.CAFile)
			}
		}
		if c.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(resolve(baseDir, c.TLS.CertFile), resolve(baseDir, c.TLS.KeyFile))
			if err != nil {
				return nil, nil, fmt.Errorf("tls client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	if c.SASL.Mechanism == "" {
		return tc, nil, nil
	}
	password, ok := os.LookupEnv(c.SASL.PasswordEnv)
	if !ok {
		return nil, nil, fmt.Errorf("sasl.password_env: environment variable %s is not set", c.SASL.PasswordEnv)
	}
	var mech sasl.Mechanism
	var err error
	switch strings.ToUpper(c.SASL.Mechanism) {
	case "PLAIN":
		mech = plain.Mechanism{Username: c.SASL.Username, Password: password}
	case "SCRAM-SHA-256":
		mech, err = scram.Mechanism(scram.SHA256, c.SASL.Username, password)
	case "SCRAM-SHA-512":
		mech, err = scram.Mechanism(scram.SHA512, c.SASL.Username, password)
	default:
		err = fmt.Errorf("unknown mechanism %s", c.SASL.Mechanism)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("sasl: %w", err)
	}
	return tc, mech, nil
}

func resolve(baseDir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(baseDir, path)
}

// transport builds the transport for requests with the brokers' TLS and SASL settings.
func transport(tc *tls.Config, mech sasl.Mechanism, timeout time.Duration) *kafka.Transport {
	return &kafka.Transport{TLS: tc, SASL: mech, DialTimeout: min(timeout, 10*time.Second), ClientID: "ckm", MetadataTTL: 10 * time.Second}
}
