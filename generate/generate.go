// Package generate writes synthetic CRM data whose truth is known: purchases follow a BG/NBD
// process and spend a Gamma-Gamma model with stated parameters, and a share of customers are
// planted key knowledge sources. The same seed always gives the same files.
package generate

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/gonum/stat/distuv"
)

// Params are the generator's settings and the true model parameters.
type Params struct {
	Customers int
	Seed      uint64
	Start     time.Time // first possible purchase
	End       time.Time // last possible purchase (inclusive day)
	Zone      string    // zone the local timestamps are written in

	R, Alpha, A, B float64 // BG/NBD: purchase rate λ ~ Gamma(R, rate Alpha) per week; dropout p ~ Beta(A, B)
	P, Q, Gamma    float64 // Gamma-Gamma: spend z ~ Gamma(P, rate ν), ν ~ Gamma(Q, rate Gamma)

	// Shares of customers planted as knowledge-source archetypes (the rest are ordinary
	// customers, who seldom give feedback): see Archetype.
	KeyShare        float64
	UnwillingShare  float64
	WillingShare    float64
	ComplainerShare float64
	ChattyShare     float64
	ReturnShare     float64 // share of purchases later partly refunded (a returned row with negative amount)
	CancelShare     float64 // share of extra cancelled orders
	Dirty           float64 // share of deliberately malformed records, for dead-letter demos
	Gzip            bool
}

// Defaults are a mid-size retailer over 2.5 years; the spend parameters are the CDNOW fit.
func Defaults() Params {
	return Params{
		Customers: 2000, Seed: 1,
		Start: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 6, 30, 0, 0, 0, 0, time.UTC),
		Zone: "Europe/Berlin",
		R:    0.9, Alpha: 6, A: 0.6, B: 4,
		P: 6.25, Q: 3.74, Gamma: 15.44,
		KeyShare: 0.03, UnwillingShare: 0.03, WillingShare: 0.04, ComplainerShare: 0.03, ChattyShare: 0.12,
		ReturnShare: 0.01, CancelShare: 0.02,
	}
}

// ExactBGNBD turns off everything that is not the BG/NBD + Gamma-Gamma process: no planted
// archetypes (they buy by their own rules), no returns, no cancellations.
func (p Params) ExactBGNBD() Params {
	p.KeyShare, p.UnwillingShare, p.WillingShare, p.ComplainerShare, p.ChattyShare = 0, 0, 0, 0, 0
	p.ReturnShare, p.CancelShare = 0, 0
	return p
}

// Archetype is the kind of knowledge source a generated customer is planted as, with the class
// the key-knowledge-source index should give it (docs/design.md) when the customer has enough
// knowledge events to be judged.
type Archetype string

const (
	// KeySource: a frequent, loyal, high-value buyer of new products who shares ideas often,
	// accepts invitations, rates well, and whose ideas the firm takes up → key_source.
	KeySource Archetype = "key_source"
	// ValuableUnwilling: as valuable a buyer as a key source, but who only reviews and
	// complains, rates poorly, declines invitations and withholds consent → incentivise.
	ValuableUnwilling Archetype = "valuable_unwilling"
	// WillingLowValue: a rare, small buyer who reviews often and warmly, accepts invitations and
	// consents → nurture.
	WillingLowValue Archetype = "willing_low_value"
	// Complainer: a small buyer who complains loudly and often, declines invitations → not_a_source.
	Complainer Archetype = "complainer"
	// Chatty: an ordinary buyer who gives ordinary feedback a few times a year → not_a_source.
	Chatty Archetype = "chatty"
	// Ordinary: the rest, who seldom give feedback (mostly insufficient_evidence).
	Ordinary Archetype = "ordinary"
)

// archetypeOf picks an archetype from one uniform draw u, by the configured shares.
func (p Params) archetypeOf(u float64) Archetype {
	for _, a := range []struct {
		share float64
		kind  Archetype
	}{{p.KeyShare, KeySource}, {p.UnwillingShare, ValuableUnwilling}, {p.WillingShare, WillingLowValue}, {p.ComplainerShare, Complainer}, {p.ChattyShare, Chatty}} {
		if u < a.share {
			return a.kind
		}
		u -= a.share
	}
	return Ordinary
}

// feedbackHabits is how an archetype gives feedback and how the firm absorbs it.
type feedbackHabits struct {
	inRate     float64 // inbound events per month
	kinds      weighted
	ratings    [2]int  // ratings drawn uniformly in [lo, hi]
	rateShare  float64 // share of inbound events other than reviews that carry a rating
	acceptRate float64 // share of invitations accepted
	consent    float64 // probability of contact consent
	ackFast    float64 // acknowledged within the SLA
	convert    float64 // converted to a requirement
	implement  float64 // implemented
}

// weighted is a discrete distribution over feedback kinds.
type weighted []struct {
	kind   string
	weight float64
}

func (w weighted) draw(rng *rand.Rand) string {
	total := 0.0
	for _, k := range w {
		total += k.weight
	}
	u := rng.Float64() * total
	for _, k := range w {
		if u < k.weight {
			return k.kind
		}
		u -= k.weight
	}
	return w[len(w)-1].kind
}

func (h feedbackHabits) withInRate(r float64) feedbackHabits { h.inRate = r; return h }

var (
	// Six in ten of an ordinary customer's inbound events carry product knowledge; the rest are
	// questions, praise and complaints.
	ordinaryKinds = weighted{{"suggestion", 0.12}, {"feature_request", 0.12}, {"co_design", 0.12}, {"complaint", 0.12 + 0.4/3},
		{"review", 0.12}, {"question", 0.4 / 3}, {"praise", 0.4 / 3}}
	ordinaryHabits = feedbackHabits{inRate: 0.04, kinds: ordinaryKinds, ratings: [2]int{1, 5}, rateShare: 0.3, acceptRate: 0.3,
		consent: 0.6, ackFast: 0.4, convert: 0.15, implement: 0.05}
	habits = map[Archetype]feedbackHabits{
		KeySource: {inRate: 0.8, kinds: weighted{{"suggestion", 1}, {"feature_request", 1}, {"co_design", 1}, {"complaint", 1}, {"review", 1}},
			ratings: [2]int{4, 5}, rateShare: 0.3, acceptRate: 0.9, consent: 1, ackFast: 0.95, convert: 0.7, implement: 0.45},
		ValuableUnwilling: {inRate: 0.5, kinds: weighted{{"review", 0.6}, {"complaint", 0.4}}, ratings: [2]int{1, 2},
			rateShare: 0.3, acceptRate: 0.05, consent: 0, ackFast: 0.4, convert: 0.15, implement: 0.05},
		WillingLowValue: {inRate: 0.8, kinds: weighted{{"review", 0.5}, {"praise", 0.3}, {"question", 0.2}}, ratings: [2]int{4, 5},
			rateShare: 0.5, acceptRate: 0.9, consent: 1, ackFast: 0.4, convert: 0.15, implement: 0.05},
		Complainer: {inRate: 0.8, kinds: weighted{{"complaint", 0.85}, {"question", 0.15}}, ratings: [2]int{1, 2},
			rateShare: 0.3, acceptRate: 0.1, consent: 0.1, ackFast: 0.4, convert: 0.15, implement: 0.05},
		Chatty:   ordinaryHabits.withInRate(0.35),
		Ordinary: ordinaryHabits,
	}
)

// Summary says what was written.
type Summary struct {
	Customers, Orders, Feedback int
	Files                       []string
}

type writer struct {
	f    *os.File
	gz   *gzip.Writer
	w    *bufio.Writer
	path string
}

func create(dir, name string, gz bool) (*writer, error) {
	if gz {
		name += ".gz"
	}
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	w := &writer{f: f, path: path}
	var out io.Writer = f
	if gz {
		w.gz = gzip.NewWriter(f)
		out = w.gz
	}
	w.w = bufio.NewWriterSize(out, 1<<20)
	return w, nil
}

func (w *writer) close() error {
	err := w.w.Flush()
	if w.gz != nil && err == nil {
		err = w.gz.Close()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", w.path, err)
	}
	return nil
}

type product struct {
	id, category string
	launch       time.Time
}

var (
	categories  = []string{"audio", "video", "books", "games", "home", "garden", "toys", "sports"}
	regions     = []string{"north", "south", "east", "west"}
	segments    = []string{"consumer", "consumer", "consumer", "smb", "enterprise"}
	channels    = []string{"email", "phone", "web", "app", "survey", "review_site", "community", "visit"}
	departments = []string{"marketing", "sales", "service", "rnd"}
)

// Write generates the data set into dir: customers.csv, orders.csv, feedback.jsonl (gzipped
// when p.Gzip), truth.csv with each customer's true latent values, and params.json.
func Write(dir string, p Params) (Summary, error) {
	var sum Summary
	loc, err := time.LoadLocation(p.Zone)
	if err != nil {
		return sum, fmt.Errorf("zone %q: %w", p.Zone, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sum, fmt.Errorf("create %s: %w", dir, err)
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x636b6d))
	lambdaDist := distuv.Gamma{Alpha: p.R, Beta: p.Alpha, Src: rng}
	dropDist := distuv.Beta{Alpha: p.A, Beta: p.B, Src: rng}
	nuDist := distuv.Gamma{Alpha: p.Q, Beta: p.Gamma, Src: rng}

	catalog := make([]product, 300)
	span := p.End.Sub(p.Start)
	for i := range catalog {
		launch := p.Start.Add(-90 * 24 * time.Hour).Add(time.Duration(rng.Int64N(int64(span + 90*24*time.Hour))))
		catalog[i] = product{id: fmt.Sprintf("P%04d", i+1), category: categories[rng.IntN(len(categories))], launch: launch.Truncate(24 * time.Hour)}
	}

	files := map[string]*writer{}
	for _, name := range []string{"customers.csv", "orders.csv", "feedback.jsonl", "truth.csv"} {
		w, err := create(dir, name, p.Gzip && name != "truth.csv")
		if err != nil {
			return sum, err
		}
		files[name] = w
		sum.Files = append(sum.Files, w.path)
	}
	cw, ow, fw, tw := files["customers.csv"].w, files["orders.csv"].w, files["feedback.jsonl"].w, files["truth.csv"].w
	cw.WriteString("customer_id,name,segment,region,signup_date,contact_consent,updated_at\n")
	ow.WriteString("order_id,customer_id,order_ts,amount,margin,quantity,unit_price,product_id,category,product_launch_date,status\n")
	tw.WriteString("customer_id,lambda,p,nu,first_purchase,purchases,planted_key_source,archetype\n")

	orderSeq, eventSeq := 0, 0
	weeks := span.Hours() / (24 * 7)
	buf := make([]byte, 0, 512)
	for c := 1; c <= p.Customers; c++ {
		id := fmt.Sprintf("C%07d", c)
		kind := p.archetypeOf(rng.Float64())
		key := kind == KeySource
		lambda, drop, nu := lambdaDist.Rand(), dropDist.Rand(), nuDist.Rand()
		valuable := kind == KeySource || kind == ValuableUnwilling
		spendScale := 1.0
		switch {
		case valuable:
			// Established, valuable customers: frequent buyers who stay and who joined in the first
			// half of the period, so their value is high at its end by construction.
			lambda, drop = math.Max(lambda, 0.3+rng.Float64()*0.3), 0
			if kind == ValuableUnwilling {
				spendScale = 2 // big spenders: their value must stand out even without ideas shared
			}
		case kind == WillingLowValue || kind == Complainer:
			lambda, spendScale = math.Min(lambda, 0.03), 0.4 // about one small purchase in eight months
		}
		spend := distuv.Gamma{Alpha: p.P, Beta: nu, Src: rng}
		birth := rng.Float64() * weeks * 0.9
		if valuable {
			birth *= 0.5 / 0.9
		}
		first := p.Start.Add(time.Duration(birth * 7 * 24 * float64(time.Hour)))
		var purchases []time.Time
		for t := birth; t <= weeks; t += rng.ExpFloat64() / lambda {
			ts := p.Start.Add(time.Duration(t * float64(week)))
			if n := len(purchases); n > 0 && sameDay(ts, purchases[n-1], loc) {
				// Models count purchase days, so a second purchase on one calendar day moves to the
				// next day: merging it instead would undercount heavy buyers and bias the fitted α.
				y, m, d := purchases[n-1].In(loc).Date()
				ts = time.Date(y, m, d+1, 0, 0, 0, 0, loc).Add(time.Duration(rng.Float64() * float64(24*time.Hour)))
				if t = float64(ts.Sub(p.Start)) / float64(week); t > weeks {
					break
				}
			}
			purchases = append(purchases, ts)
			// BG/NBD: a customer may drop out after each repeat purchase, never right after the first.
			if len(purchases) > 1 && rng.Float64() < drop {
				break
			}
		}
		margin := 0.15 + 0.3*rng.Float64()
		for _, ts := range purchases {
			orderSeq++
			amount := math.Round(spend.Rand()*spendScale*100) / 100
			if amount <= 0 {
				amount = 0.01
			}
			prod := pickProduct(rng, catalog, ts, valuable)
			qty := 1 + rng.IntN(4)
			status := "completed"
			amountText := strconv.FormatFloat(amount, 'f', 2, 64)
			customer := id
			local := ts.In(loc).Format("2006-01-02 15:04:05")
			if p.Dirty > 0 && rng.Float64() < p.Dirty {
				switch rng.IntN(3) {
				case 0:
					amountText = "n/a"
				case 1:
					customer = ""
				case 2:
					local = "2025-13-45 25:61:00"
				}
			}
			buf = buf[:0]
			buf = fmt.Appendf(buf, "O%09d,%s,%s,%s,%.2f,%d,%.2f,%s,%s,%s,%s\n", orderSeq, customer, local, amountText,
				amount*margin, qty, amount/float64(qty), prod.id, prod.category, prod.launch.Format(time.DateOnly), status)
			ow.Write(buf)
			sum.Orders++
			if rng.Float64() < p.ReturnShare {
				orderSeq++
				refund := -math.Round(amount*(0.3+0.7*rng.Float64())*100) / 100
				ret := ts.Add(time.Duration(24*(1+rng.IntN(20))) * time.Hour)
				if !ret.After(p.End.Add(24 * time.Hour)) {
					fmt.Fprintf(ow, "O%09d,%s,%s,%.2f,%.2f,%d,%.2f,%s,%s,%s,returned\n", orderSeq, id, ret.In(loc).Format("2006-01-02 15:04:05"),
						refund, refund*margin, 1, refund, prod.id, prod.category, prod.launch.Format(time.DateOnly))
					sum.Orders++
				}
			}
			if rng.Float64() < p.CancelShare {
				orderSeq++
				fmt.Fprintf(ow, "O%09d,%s,%s,%.2f,,%d,%.2f,%s,%s,%s,cancelled\n", orderSeq, id, ts.Add(time.Hour).In(loc).Format("2006-01-02 15:04:05"),
					amount, 1, amount, prod.id, prod.category, prod.launch.Format(time.DateOnly))
				sum.Orders++
			}
		}
		signup := first.Add(-time.Duration(rng.IntN(30*24)) * time.Hour)
		consent := rng.Float64() < habits[kind].consent
		updated := first.Add(time.Duration(rng.IntN(24*60)) * time.Hour)
		region := regions[rng.IntN(len(regions))]
		fmt.Fprintf(cw, "%s,Customer %d,%s,%s,%s,%t,%s\n", id, c, segments[rng.IntN(len(segments))], region,
			signup.Format(time.DateOnly), consent, updated.UTC().Format(time.RFC3339))
		sum.Customers++
		if rng.Float64() < 0.02 { // a later CRM update moves the customer: the newest record must win
			fmt.Fprintf(cw, "%s,Customer %d,%s,%s,%s,%t,%s\n", id, c, segments[rng.IntN(len(segments))], regions[(rng.IntN(3)+1+indexOf(regions, region))%len(regions)],
				signup.Format(time.DateOnly), consent, updated.Add(90*24*time.Hour).UTC().Format(time.RFC3339))
		}
		// An ordinary customer's feedback ends two months after the last purchase; a planted
		// archetype stays engaged to the end whether or not they still buy.
		last := p.End
		if kind == Ordinary && len(purchases) > 0 {
			last = purchases[len(purchases)-1].Add(60 * 24 * time.Hour)
		}
		sum.Feedback += writeFeedback(fw, rng, &eventSeq, id, habits[kind], first, last, p, loc)
		fmt.Fprintf(tw, "%s,%.6f,%.6f,%.6f,%s,%d,%t,%s\n", id, lambda, drop, nu, first.Format(time.DateOnly), len(purchases), key, kind)
	}
	for _, w := range files {
		if err := w.close(); err != nil {
			return sum, err
		}
	}
	params, _ := json.MarshalIndent(map[string]any{
		"bgnbd":       map[string]float64{"r": p.R, "alpha": p.Alpha, "a": p.A, "b": p.B},
		"gamma_gamma": map[string]float64{"p": p.P, "q": p.Q, "gamma": p.Gamma},
		"customers":   p.Customers, "seed": p.Seed, "start": p.Start.Format(time.DateOnly), "end": p.End.Format(time.DateOnly),
		"time_unit": "week", "zone": p.Zone,
		"archetype_shares": map[Archetype]float64{KeySource: p.KeyShare, ValuableUnwilling: p.UnwillingShare, WillingLowValue: p.WillingShare,
			Complainer: p.ComplainerShare, Chatty: p.ChattyShare},
		"note": "key sources and valuable-unwilling customers buy at raised rates and never drop out, willing-low-value customers and complainers buy rarely and little; set every share to 0 for an exact BG/NBD population",
	}, "", "  ")
	paramsPath := filepath.Join(dir, "params.json")
	if err := os.WriteFile(paramsPath, append(params, '\n'), 0o644); err != nil {
		return sum, fmt.Errorf("write %s: %w", paramsPath, err)
	}
	sum.Files = append(sum.Files, paramsPath)
	return sum, nil
}

// pickProduct favours recently launched products for key sources (lead users).
func pickProduct(rng *rand.Rand, catalog []product, ts time.Time, leadUser bool) product {
	for tries := 0; tries < 8; tries++ {
		pr := catalog[rng.IntN(len(catalog))]
		if pr.launch.After(ts) {
			continue
		}
		if !leadUser || ts.Sub(pr.launch) < 90*24*time.Hour || tries > 5 {
			return pr
		}
	}
	return catalog[0]
}

type event struct {
	EventID  string `json:"event_id"`
	Customer struct {
		ID string `json:"id"`
	} `json:"customer"`
	TS             string  `json:"ts"`
	Direction      string  `json:"direction"`
	Kind           string  `json:"kind"`
	Channel        string  `json:"channel"`
	ProductID      string  `json:"product_id,omitempty"`
	Rating         *int    `json:"rating,omitempty"`
	Text           string  `json:"text,omitempty"`
	Department     string  `json:"department"`
	Responded      *bool   `json:"responded,omitempty"`
	Status         string  `json:"status"`
	AcknowledgedAt *string `json:"acknowledged_at,omitempty"`
	ConvertedAt    *string `json:"converted_at,omitempty"`
	ImplementedAt  *string `json:"implemented_at,omitempty"`
}

// writeFeedback writes the customer's inbound feedback and the firm's outbound invites between
// from and to, by the customer's habits: how often and what they say, how they rate, whether they
// accept invitations, and how fast the firm acknowledges, converts and implements what they say.
func writeFeedback(w *bufio.Writer, rng *rand.Rand, seq *int, id string, h feedbackHabits, from, to time.Time, p Params, loc *time.Location) int {
	if to.After(p.End) {
		to = p.End
	}
	months := to.Sub(from).Hours() / (24 * 30)
	if months <= 0 {
		return 0
	}
	n := 0
	emit := func(e event) {
		b, _ := json.Marshal(e)
		if p.Dirty > 0 && rng.Float64() < p.Dirty {
			b = b[:len(b)/2] // a truncated message
		}
		w.Write(b)
		w.WriteByte('\n')
		n++
	}
	stamp := func(t time.Time) *string { s := t.In(loc).Format(time.RFC3339); return &s }
	at := func() time.Time { return from.Add(time.Duration(rng.Float64() * float64(to.Sub(from)))) }
	rating := func() *int { r := h.ratings[0] + rng.IntN(h.ratings[1]-h.ratings[0]+1); return &r }
	inbound := poisson(rng, h.inRate*months)
	for i := 0; i < inbound; i++ {
		*seq++
		t := at()
		e := event{EventID: fmt.Sprintf("E%09d", *seq), TS: t.In(loc).Format(time.RFC3339), Direction: "inbound",
			Kind: h.kinds.draw(rng), Channel: channels[rng.IntN(len(channels))],
			Department: departments[rng.IntN(len(departments))], Status: "new"}
		e.Customer.ID = id
		if e.Kind == "review" || rng.Float64() < h.rateShare {
			e.Rating = rating()
		}
		if e.Kind == "complaint" && e.Rating != nil && *e.Rating > 2 {
			r := 1 + rng.IntN(2)
			e.Rating = &r
		}
		e.Text = "feedback on " + e.Kind
		if rng.Float64() < h.ackFast {
			e.Status = "acknowledged"
			e.AcknowledgedAt = stamp(t.Add(time.Duration(rng.IntN(6*24)) * time.Hour))
			if rng.Float64() < h.convert {
				e.Status = "converted"
				e.ConvertedAt = stamp(t.Add(time.Duration(7*24+rng.IntN(30*24)) * time.Hour))
				if rng.Float64() < h.implement/h.convert {
					e.Status = "implemented"
					e.ImplementedAt = stamp(t.Add(time.Duration(40*24+rng.IntN(90*24)) * time.Hour))
				}
			}
		} else if rng.Float64() < 0.5 {
			e.Status = "acknowledged"
			e.AcknowledgedAt = stamp(t.Add(time.Duration(8*24+rng.IntN(20*24)) * time.Hour))
		}
		emit(e)
	}
	invites := poisson(rng, 0.15*months)
	for i := 0; i < invites; i++ {
		*seq++
		t := at()
		responded := rng.Float64() < h.acceptRate
		e := event{EventID: fmt.Sprintf("E%09d", *seq), TS: t.In(loc).Format(time.RFC3339), Direction: "outbound",
			Kind: "survey_invite", Channel: "email", Department: "marketing", Status: "new", Responded: &responded}
		e.Customer.ID = id
		emit(e)
		if responded {
			*seq++
			resp := event{EventID: fmt.Sprintf("E%09d", *seq), TS: t.Add(48 * time.Hour).In(loc).Format(time.RFC3339), Direction: "inbound",
				Kind: "survey_response", Channel: "survey", Department: "marketing", Status: "acknowledged", Rating: rating(),
				AcknowledgedAt: stamp(t.Add(72 * time.Hour))}
			resp.Customer.ID = id
			emit(resp)
		}
	}
	return n
}

const week = 7 * 24 * time.Hour

func sameDay(a, b time.Time, loc *time.Location) bool {
	ya, ma, da := a.In(loc).Date()
	yb, mb, db := b.In(loc).Date()
	return ya == yb && ma == mb && da == db
}

func poisson(rng *rand.Rand, mean float64) int {
	return int(distuv.Poisson{Lambda: math.Max(mean, 1e-9), Src: rng}.Rand())
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return 0
}
