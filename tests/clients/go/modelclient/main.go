// modelclient makes OpenAI chat-completion calls with Go's net/http and
// crypto/tls (standard library only) against the sensor's fake model API.
//
//	OPENAI_API_KEY=sk-... modelclient -url https://127.0.0.1:PORT -ca DIR/ca.pem \
//	    [-model gpt-4o-mini] [-n 1] [-proto h2|http1.1] [-stream] \
//	    [-header K:V ...] [-prompt-bytes N]
//
// It trusts only the CA in the -ca file. -proto h2 uses net/http's default
// TLS transport (ALPN h2, http/1.1: HTTP/2 when the server agrees); -proto
// http1.1 disables HTTP/2 and offers ALPN http/1.1 only. The N calls go
// through one client, so they share one connection. One JSON line per call
// on stdout; on any error (including an HTTP status other than 200) a
// message on stderr and exit status 1.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "modelclient: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	base := flag.String("url", "", "base URL, e.g. https://127.0.0.1:PORT (a trailing /v1 is accepted)")
	caFile := flag.String("ca", "", "PEM file with the only CA to trust")
	model := flag.String("model", "gpt-4o-mini", "model name")
	n := flag.Int("n", 1, "number of calls (one connection)")
	proto := flag.String("proto", "h2", "h2 or http1.1")
	stream := flag.Bool("stream", false, `send "stream": true and read the SSE body to the end`)
	promptBytes := flag.Int("prompt-bytes", 0, "pad the user message to this many bytes")
	var headers headerFlags
	flag.Var(&headers, "header", "extra request header K:V (repeatable), e.g. x-fake-delay-ms:20")
	flag.Parse()
	if *base == "" || *caFile == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	key := os.Getenv("OPENAI_API_KEY")
	if key == "" {
		fail("OPENAI_API_KEY is not set")
	}

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fail("reading CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", *caFile)
	}

	// http.DefaultTransport has ForceAttemptHTTP2 set; a clone keeps it.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	switch *proto {
	case "h2":
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	case "http1.1":
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}
		tr.ForceAttemptHTTP2 = false
		// A non-nil, empty map turns HTTP/2 off.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	default:
		fail("-proto must be h2 or http1.1, not %q", *proto)
	}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}

	url := strings.TrimSuffix(strings.TrimSuffix(*base, "/"), "/v1") + "/v1/chat/completions"
	content := "Say hello."
	if *promptBytes > len(content) {
		content += strings.Repeat("x", *promptBytes-len(content))
	}
	req := map[string]interface{}{
		"model":    *model,
		"messages": []map[string]string{{"role": "user", "content": content}},
	}
	if *stream {
		req["stream"] = true
	}
	body, err := json.Marshal(req)
	if err != nil {
		fail("encoding request: %v", err)
	}

	for call := 0; call < *n; call++ {
		if err := doCall(client, url, key, body, headers, *stream, call); err != nil {
			fail("call %d: %v", call, err)
		}
	}
}

func doCall(client *http.Client, url, key string, body []byte, headers headerFlags, stream bool, call int) error {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("bad -header %q (want K:V)", h)
		}
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	out := map[string]interface{}{
		"pid": os.Getpid(), "call": call, "status": resp.StatusCode,
		"proto": resp.Proto, "stream": stream, "ok": resp.StatusCode == 200,
	}
	var model, id, text interface{}
	var usage map[string]interface{}
	if stream && resp.StatusCode == 200 {
		// Server-sent events: "data: {chunk}" lines, then "data: [DONE]".
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		var sb strings.Builder
		events := 0
		done := false
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			data := strings.TrimPrefix(line, "data: ")
			events++
			if data == "[DONE]" {
				done = true
				continue
			}
			var chunk struct {
				ID      string                 `json:"id"`
				Model   string                 `json:"model"`
				Usage   map[string]interface{} `json:"usage"`
				Choices []struct {
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(data), &chunk); err != nil {
				return fmt.Errorf("bad SSE chunk %q: %v", data, err)
			}
			model, id = chunk.Model, chunk.ID
			if chunk.Usage != nil {
				usage = chunk.Usage
			}
			for _, c := range chunk.Choices {
				sb.WriteString(c.Delta.Content)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("reading stream: %v", err)
		}
		if !done {
			return errors.New("stream ended without data: [DONE]")
		}
		text = sb.String()
		out["events"] = events
	} else {
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("reading body: %v", err)
		}
		var doc map[string]interface{}
		if err := json.Unmarshal(raw, &doc); err != nil {
			return fmt.Errorf("status %d, body is not JSON: %q", resp.StatusCode, raw)
		}
		model, id = doc["model"], doc["id"]
		if u, ok := doc["usage"].(map[string]interface{}); ok {
			usage = u
		}
		if choices, ok := doc["choices"].([]interface{}); ok && len(choices) > 0 {
			if c, ok := choices[0].(map[string]interface{}); ok {
				if m, ok := c["message"].(map[string]interface{}); ok {
					text = m["content"]
				}
			}
		}
		if resp.StatusCode != 200 {
			out["error"] = doc["error"]
		}
	}
	out["model"], out["id"], out["text"] = model, id, text
	if usage != nil {
		out["usage"] = map[string]interface{}{"input": usage["prompt_tokens"], "output": usage["completion_tokens"]}
	}
	line, err := json.Marshal(out)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	if resp.StatusCode != 200 {
		return fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	return nil
}
