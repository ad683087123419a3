// A query through clickhouse-go over HTTP, configured as Grafana's ClickHouse data source configures it
// (pkg/plugin/driver.go of grafana/clickhouse-datasource: Protocol HTTP, gzip compression, the query
// timeout as the context deadline, database/sql). Used by tests/integration/test_sql_http.py.
//
// Usage: clickhousego HOST:PORT DATABASE USER PASSWORD QUERY
// Prints one JSON document: {"columns": [...], "rows": [[...], ...]} or {"error": "..."}.
package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func main() {
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) {
		_ = out.Encode(map[string]string{"error": err.Error()})
		os.Exit(1)
	}
	db := clickhouse.OpenDB(&clickhouse.Options{
		Addr:        []string{os.Args[1]},
		Auth:        clickhouse.Auth{Database: os.Args[2], Username: os.Args[3], Password: os.Args[4]},
		Protocol:    clickhouse.HTTP,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionGZIP},
		DialTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		fail(err)
	}
	rows, err := db.QueryContext(ctx, os.Args[5])
	if err != nil {
		fail(err)
	}
	columns, err := rows.Columns()
	if err != nil {
		fail(err)
	}
	result := [][]any{}
	for rows.Next() {
		values := make([]any, len(columns))
		pointers := make([]any, len(columns))
		for i := range values {
			pointers[i] = &values[i]
		}
		if err := rows.Scan(pointers...); err != nil {
			fail(err)
		}
		result = append(result, values)
	}
	if err := rows.Err(); err != nil {
		fail(err)
	}
	_ = out.Encode(map[string]any{"columns": columns, "rows": result})
}
