package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/warmpath/warmpath/app/internal/domain"
)

type reflectType = reflect.Type

var planType = reflect.TypeOf(domain.Plan{})

// parsePlan parses one "name:quota/period:maxItems" entry of PLANS.
func parsePlan(v string) (domain.Plan, error) {
	v = strings.TrimSpace(v)
	name, rest, ok := strings.Cut(v, ":")
	if !ok || name == "" {
		return domain.Plan{}, fmt.Errorf("plan %q: want name:quota/period:maxItems", v)
	}
	qp, maxStr, ok := strings.Cut(rest, ":")
	if !ok {
		return domain.Plan{}, fmt.Errorf("plan %q: want name:quota/period:maxItems", v)
	}
	qStr, period, ok := strings.Cut(qp, "/")
	if !ok {
		return domain.Plan{}, fmt.Errorf("plan %q: want quota/period", v)
	}
	q, err := strconv.ParseInt(qStr, 10, 64)
	if err != nil || q < 0 {
		return domain.Plan{}, fmt.Errorf("plan %q: quota must be a non-negative integer", v)
	}
	m, err := strconv.ParseInt(maxStr, 10, 64)
	if err != nil || m < 1 {
		return domain.Plan{}, fmt.Errorf("plan %q: maxItems must be a positive integer", v)
	}
	p := domain.Period(period)
	if !p.Valid() {
		return domain.Plan{}, fmt.Errorf("plan %q: period must be day or month", v)
	}
	return domain.Plan{Name: name, Quota: q, Period: p, MaxItems: m}, nil
}

func formatPlan(p domain.Plan) string {
	return fmt.Sprintf("%s:%d/%s:%d", p.Name, p.Quota, p.Period, p.MaxItems)
}

// Names lists every environment variable Config reads.
func Names() []string {
	var names []string
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if n := t.Field(i).Tag.Get("env"); n != "" {
			names = append(names, n)
		}
	}
	return names
}

// envName maps a struct field name back to its variable, for error messages.
func envName(field string) string {
	if f, ok := reflect.TypeOf(Config{}).FieldByName(field); ok {
		if n := f.Tag.Get("env"); n != "" {
			return n
		}
	}
	return field
}
