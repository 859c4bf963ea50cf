// ModelClient: OpenAI chat-completion calls with Java's java.net.http.HttpClient
// (JDK 17, no dependencies, run with the source launcher, no build step):
//
//   OPENAI_API_KEY=sk-... java tests/clients/java/ModelClient.java BASE CA.pem MODEL N [h2|http1.1]
//
// BASE is e.g. https://127.0.0.1:PORT (a trailing /v1 is accepted); the call is
// POST BASE/v1/chat/completions. The only trusted CA is the one in CA.pem: it is
// loaded with CertificateFactory into an in-memory KeyStore behind the SSLContext.
// h2 (default) asks for HTTP/2 (ALPN h2, http/1.1); http1.1 asks for HTTP/1.1 only.
// The N calls go through one HttpClient, so they share one connection.
// One JSON line per call on stdout: {"pid", "call", "status", "proto", "model", "id", "ok"};
// on any error (including an HTTP status other than 200) a message on stderr, exit 1.

import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.Collection;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class ModelClient {
    public static void main(String[] args) {
        try {
            System.exit(run(args));
        } catch (Exception e) {
            System.err.println("ModelClient: " + e);
            System.exit(1);
        }
    }

    static int run(String[] args) throws Exception {
        if (args.length < 4 || args.length > 5) {
            System.err.println("usage: ModelClient BASE CA.pem MODEL N [h2|http1.1]");
            return 2;
        }
        String base = args[0].replaceAll("/+$", "").replaceAll("/v1$", "");
        String model = args[2];
        int n = Integer.parseInt(args[3]);
        String proto = args.length == 5 ? args[4] : "h2";
        HttpClient.Version version;
        if (proto.equals("h2")) {
            version = HttpClient.Version.HTTP_2;
        } else if (proto.equals("http1.1")) {
            version = HttpClient.Version.HTTP_1_1;
        } else {
            System.err.println("ModelClient: protocol must be h2 or http1.1, not " + proto);
            return 2;
        }
        String key = System.getenv("OPENAI_API_KEY");
        if (key == null || key.isEmpty()) {
            System.err.println("ModelClient: OPENAI_API_KEY is not set");
            return 1;
        }

        // Trust store: only the CA certificate(s) from the PEM file.
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        Collection<? extends Certificate> cas;
        try (InputStream in = new FileInputStream(args[1])) {
            cas = CertificateFactory.getInstance("X.509").generateCertificates(in);
        }
        if (cas.isEmpty()) {
            System.err.println("ModelClient: no certificate in " + args[1]);
            return 1;
        }
        int i = 0;
        for (Certificate c : cas) {
            trust.setCertificateEntry("ca" + i++, c);
        }
        TrustManagerFactory tmf =
                TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(null, tmf.getTrustManagers(), null);

        HttpClient client = HttpClient.newBuilder()
                .version(version)
                .sslContext(ssl)
                .connectTimeout(Duration.ofSeconds(30))
                .build();
        String body = "{\"model\": " + quote(model)
                + ", \"messages\": [{\"role\": \"user\", \"content\": \"Say hello.\"}]}";
        long pid = ProcessHandle.current().pid();
        for (int call = 0; call < n; call++) {
            HttpRequest req = HttpRequest.newBuilder(URI.create(base + "/v1/chat/completions"))
                    .timeout(Duration.ofSeconds(60))
                    .header("Content-Type", "application/json")
                    .header("Authorization", "Bearer " + key)
                    .POST(HttpRequest.BodyPublishers.ofString(body))
                    .build();
            HttpResponse<String> resp = client.send(req, HttpResponse.BodyHandlers.ofString());
            int status = resp.statusCode();
            String respProto = resp.version() == HttpClient.Version.HTTP_2 ? "HTTP/2" : "HTTP/1.1";
            String got = field(resp.body(), "model");
            System.out.println("{\"pid\": " + pid + ", \"call\": " + call
                    + ", \"status\": " + status + ", \"proto\": " + quote(respProto)
                    + ", \"model\": " + quote(got) + ", \"id\": " + quote(field(resp.body(), "id"))
                    + ", \"ok\": " + (status == 200) + "}");
            if (status != 200) {
                System.err.println("ModelClient: call " + call + ": HTTP status " + status
                        + ": " + resp.body());
                return 1;
            }
            if (got == null) {
                System.err.println("ModelClient: call " + call + ": no model in " + resp.body());
                return 1;
            }
        }
        return 0;
    }

    /** The first string value of "name" in a JSON text (enough for the fake API's answers). */
    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + Pattern.quote(name) + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"")
                .matcher(json);
        return m.find() ? m.group(1).replace("\\\"", "\"").replace("\\\\", "\\") : null;
    }

    /** A JSON string literal, or null. */
    static String quote(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
