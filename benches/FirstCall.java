// The JVM package's first call, for benches/run_all.py: JVM start to a constructed
// ClientCredentials (loads the native library through JNA, builds the Rust object).
// `java FirstCall empty` is the baseline: the same JVM doing nothing.
public class FirstCall {
    public static void main(String[] args) throws Exception {
        long t0 = System.nanoTime();
        if (args.length > 0 && args[0].equals("empty")) {
            System.out.println("{\"first_call_ms\": 0}");
            return;
        }
        Object auth = new io.cibmtrfhir.ClientCredentials(
            "http://127.0.0.1:9/token", "bench", "secret", null, "client_secret_post", null, null);
        long t1 = System.nanoTime();
        if (auth == null) throw new IllegalStateException();
        System.out.println("{\"first_call_ms\": " + (t1 - t0) / 1e6 + "}");
    }
}
