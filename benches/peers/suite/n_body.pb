// The benchmarks game's n-body. pebble run n_body.pb STEPS
let pi = 3.141592653589793
let solar_mass = 4.0 * pi * pi
let days_per_year = 365.24
// A body: [x, y, z, vx, vy, vz, mass]
fn body(x, y, z, vx, vy, vz, mass) {
    return [x, y, z, vx * days_per_year, vy * days_per_year, vz * days_per_year, mass * solar_mass]
}
let bodies = [
    body(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    body(4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
        1.66007664274403694e-03, 7.69901118419740425e-03, -6.90460016972063023e-05,
        9.54791938424326609e-04),
    body(8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
        -2.76742510726862411e-03, 4.99852801234917238e-03, 2.30417297573763929e-05,
        2.85885980666130812e-04),
    body(1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
        2.96460137564761618e-03, 2.37847173959480950e-03, -2.96589568540237556e-05,
        4.36624404335156298e-05),
    body(1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
        2.68067772490389322e-03, 1.62824170038242295e-03, -9.51592254519715870e-05,
        5.15138902046611451e-05)
]
let nb = len(bodies)

fn offset_momentum() {
    let px = 0.0
    let py = 0.0
    let pz = 0.0
    for b in bodies {
        px = px + b[3] * b[6]
        py = py + b[4] * b[6]
        pz = pz + b[5] * b[6]
    }
    let sun = bodies[0]
    sun[3] = -px / solar_mass
    sun[4] = -py / solar_mass
    sun[5] = -pz / solar_mass
}

fn energy() {
    let e = 0.0
    for i in 0..nb {
        let b = bodies[i]
        e = e + 0.5 * b[6] * (b[3] * b[3] + b[4] * b[4] + b[5] * b[5])
        for j in (i + 1)..nb {
            let b2 = bodies[j]
            let dx = b[0] - b2[0]
            let dy = b[1] - b2[1]
            let dz = b[2] - b2[2]
            e = e - (b[6] * b2[6]) / sqrt(dx * dx + dy * dy + dz * dz)
        }
    }
    return e
}

fn advance(dt) {
    for i in 0..nb {
        let b = bodies[i]
        let bx = b[0]
        let by = b[1]
        let bz = b[2]
        let bm = b[6]
        for j in (i + 1)..nb {
            let b2 = bodies[j]
            let dx = bx - b2[0]
            let dy = by - b2[1]
            let dz = bz - b2[2]
            let d2 = dx * dx + dy * dy + dz * dz
            let mag = dt / (d2 * sqrt(d2))
            let bm2 = b2[6] * mag
            b[3] = b[3] - dx * bm2
            b[4] = b[4] - dy * bm2
            b[5] = b[5] - dz * bm2
            let bmm = bm * mag
            b2[3] = b2[3] + dx * bmm
            b2[4] = b2[4] + dy * bmm
            b2[5] = b2[5] + dz * bmm
        }
    }
    for b in bodies {
        b[0] = b[0] + dt * b[3]
        b[1] = b[1] + dt * b[4]
        b[2] = b[2] + dt * b[5]
    }
}

let n = int(args()[0])
offset_momentum()
print(format("%0.9f", energy()))
for i in 0..n { advance(0.01) }
print(format("%0.9f", energy()))
