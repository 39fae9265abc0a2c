// Package mapping describes the canonical tables and compiles a source's field mapping into
// one SQL projection that casts every column and gives each unmappable row its reason.
package mapping

// Type is a canonical column type.
type Type int

const (
	Text Type = iota
	Double
	Integer
	Boolean
	Date
	Timestamp
)

// SQL is the type's DuckDB name.
func (t Type) SQL() string {
	return [...]string{"VARCHAR", "DOUBLE", "INTEGER", "BOOLEAN", "DATE", "TIMESTAMPTZ"}[t]
}

func (t Type) word() string {
	return [...]string{"text", "a number", "a whole number", "true/false", "a date", "a timestamp"}[t]
}

// Column is one canonical column.
type Column struct {
	Name     string
	Type     Type
	Required bool
	Allowed  []string // closed vocabulary, when set
	Min, Max float64  // inclusive range for numbers, when Max > Min
	// Earliest is the earliest date or timestamp taken unless a source's mapping sets min: the
	// placeholders exports write for "no date" (1900-01-01, 0001-01-01, 1970-01-01 00:00) would
	// load as a customer's first order decades back and mislead every CLV fit.
	Earliest string
	Additive bool // lines of one record add up in this column (rollup_lines)
}

// Table is a canonical table and how rows with the same key are reconciled.
type Table struct {
	Name    string
	Key     string
	Version string // when set, the row with the latest Version wins; otherwise the latest loaded wins
	Columns []Column
}

// Additive reports whether the table has columns that lines of one record add up in.
func (t Table) Additive() bool {
	for _, c := range t.Columns {
		if c.Additive {
			return true
		}
	}
	return false
}

// Column returns the named column.
func (t Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if c.Name == name {
			return c, true
		}
	}
	return Column{}, false
}

// ColumnNames lists the table's columns in order.
func (t Table) ColumnNames() []string {
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}

// EarliestEvent is the earliest time of an order or a feedback event taken by default: the day
// after the Unix epoch, whose first instant is itself a common placeholder.
const EarliestEvent = "1970-01-02"

// Tables are the canonical tables, in load order (customers before the facts that reference them).
var Tables = []Table{
	{Name: "customers", Key: "customer_id", Version: "updated_at", Columns: []Column{
		{Name: "customer_id", Type: Text, Required: true},
		{Name: "name", Type: Text},
		{Name: "segment", Type: Text},
		{Name: "region", Type: Text},
		{Name: "signup_date", Type: Date},
		{Name: "contact_consent", Type: Boolean},
		{Name: "updated_at", Type: Timestamp},
	}},
	{Name: "orders", Key: "order_id", Columns: []Column{
		{Name: "order_id", Type: Text, Required: true},
		{Name: "customer_id", Type: Text, Required: true},
		{Name: "order_ts", Type: Timestamp, Required: true, Earliest: EarliestEvent},
		{Name: "amount", Type: Double, Required: true, Additive: true},
		{Name: "margin", Type: Double, Additive: true},
		{Name: "quantity", Type: Double, Additive: true},
		{Name: "product_id", Type: Text},
		{Name: "category", Type: Text},
		{Name: "product_launch_date", Type: Date},
		{Name: "status", Type: Text, Required: true, Allowed: []string{"completed", "cancelled", "returned"}},
	}},
	{Name: "feedback", Key: "event_id", Columns: []Column{
		{Name: "event_id", Type: Text, Required: true},
		{Name: "customer_id", Type: Text, Required: true},
		{Name: "event_ts", Type: Timestamp, Required: true, Earliest: EarliestEvent},
		{Name: "direction", Type: Text, Required: true, Allowed: []string{"inbound", "outbound"}},
		{Name: "kind", Type: Text, Required: true, Allowed: []string{"suggestion", "feature_request", "complaint",
			"review", "praise", "question", "survey_invite", "survey_response", "co_design"}},
		{Name: "channel", Type: Text, Allowed: []string{"email", "phone", "web", "app", "survey", "review_site", "community", "visit"}},
		{Name: "product_id", Type: Text},
		{Name: "category", Type: Text},
		{Name: "rating", Type: Integer, Min: 1, Max: 5},
		{Name: "text", Type: Text},
		{Name: "department", Type: Text, Allowed: []string{"marketing", "sales", "service", "rnd"}},
		{Name: "responded", Type: Boolean},
		{Name: "status", Type: Text, Allowed: []string{"new", "acknowledged", "converted", "implemented", "rejected"}},
		{Name: "acknowledged_at", Type: Timestamp, Earliest: EarliestEvent},
		{Name: "converted_at", Type: Timestamp, Earliest: EarliestEvent},
		{Name: "implemented_at", Type: Timestamp, Earliest: EarliestEvent},
	}},
}

// Lineage are the columns every canonical row carries after its mapped columns: where it came
// from and when, and (_extra) the source fields the mapping did not read.
var Lineage = []string{"_source", "_position", "_loaded_at", "_run_id", "_extra", "_stream", "_seq"}

// StoredColumns lists the table's columns as stored: its own, then Lineage.
func (t Table) StoredColumns() []string { return append(t.ColumnNames(), Lineage...) }

// TableNamed returns the canonical table called name.
func TableNamed(name string) (Table, bool) {
	for _, t := range Tables {
		if t.Name == name {
			return t, true
		}
	}
	return Table{}, false
}

// TableNames lists the canonical tables.
func TableNames() []string {
	out := make([]string, len(Tables))
	for i, t := range Tables {
		out[i] = t.Name
	}
	return out
}
