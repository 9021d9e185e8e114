#[test]
fn smoke() {
    let v = goro::run(|| {
        let h = goro::spawn(|| 41 + 1);
        let mut n = 0;
        for _ in 0..10 {
            goro::yield_now();
            n += 1;
        }
        h.join().unwrap() + n - 10
    });
    assert_eq!(v, 42);
}
