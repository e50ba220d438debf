"""Joint-angle choreography of the 15 Human3.6M action classes for the synthetic demo data.

`synthesize_action` turns an action class, a length and a random generator into a 32-joint
world-space motion (via `motion.forward_kinematics`). Each class is a small recipe: a speed
profile along an elliptic floor path (heading follows the path, so walking includes turning),
a gait generator whose hip amplitude follows speed and cadence, a sit/crouch blend and arm,
trunk and head gestures (pointing, waving, hand-to-ear, hand-to-mouth, reaching, posing).
Every recipe draws its own amplitudes, phases, speeds and sides from `rng`, so two subjects
performing the same action move differently.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aptpose_jax.datasets.motion import (
    ANGLE_NAMES,
    forward_kinematics,
    smooth_noise,
    smooth_pulses,
)

_D = np.deg2rad


def _keyframes(rng: np.random.Generator, t: np.ndarray, hold: float, lo: float, hi: float):
    """Random values in [lo, hi] held around knots ~`hold` s apart, eased with cosines."""
    n_knots = int(t[-1] / hold) + 3
    knots = (np.arange(n_knots) - rng.uniform()) * hold
    values = rng.uniform(lo, hi, n_knots)
    idx = np.clip(np.searchsorted(knots, t) - 1, 0, n_knots - 2)
    frac = np.clip((t - knots[idx]) / hold, 0.0, 1.0)
    ease = 0.5 - 0.5 * np.cos(np.pi * frac)
    return values[idx] * (1 - ease) + values[idx + 1] * ease


def _path(rng: np.random.Generator, speed: np.ndarray, fps: float, radius: float):
    """Positions (N, 2) and heading (N,) of a walk along a random ellipse at `speed` m/s."""
    rx, ry = radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.55, 0.8)
    tilt, start = rng.uniform(0, 2 * np.pi, 2)
    direction = rng.choice([-1.0, 1.0])
    dist = np.concatenate([[0.0], np.cumsum(speed[:-1]) / fps])  # (N,) metres walked
    loops = int(dist[-1] / (2 * np.pi * ry)) + 2
    theta = np.linspace(0.0, 2 * np.pi * loops, 720 * loops)
    d_ellipse = np.stack([-rx * np.sin(theta), ry * np.cos(theta)], -1)  # (K, 2)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(d_ellipse, axis=0), axis=1))])
    th = start + direction * np.interp(dist, arc, theta)
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    xy = np.stack([rx * np.cos(th), ry * np.sin(th)], -1) @ rot.T  # (N, 2)
    tangent = direction * np.stack([-rx * np.sin(th), ry * np.cos(th)], -1) @ rot.T
    # Body forward (+y) in the world is (-sin yaw, cos yaw).
    heading = np.unwrap(np.arctan2(-tangent[:, 0], tangent[:, 1]))
    return xy + np.array([0.0, 0.3]), heading  # centre of the H36M capture area (about)


def _gait(rng: np.random.Generator, t, speed, fps: float, leg: float, ang: dict) -> None:
    """Adds a walking cycle whose amplitude and cadence follow `speed` (m/s)."""
    cadence = rng.uniform(0.85, 1.05)  # gait cycles (two steps) per second at full speed
    rate = cadence * np.clip(speed / 0.6, 0.0, 1.0)
    phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(rate) / fps  # (N,)
    stride = speed / np.maximum(rate, 0.3)  # metres per cycle
    hip_amp = np.arcsin(np.clip(stride / (4.0 * leg), 0.0, 0.5))  # cycle = 4 leg sin(A)
    act = np.clip(speed / 0.4, 0.0, 1.0)  # 0 standing .. 1 walking
    arm_amp = hip_amp * rng.uniform(0.6, 1.1)
    for side, ph in (("r", phase), ("l", phase + np.pi)):
        ang[f"hip_flex_{side}"] += hip_amp * np.sin(ph) + act * _D(4)
        swing = np.clip(np.cos(ph - 0.3), 0.0, 1.0) ** 2
        stance = np.clip(-np.cos(ph), 0.0, 1.0)
        ang[f"knee_{side}"] += act * (_D(55) * swing + _D(8) * stance)
        opposite = "l" if side == "r" else "r"
        ang[f"sh_flex_{opposite}"] += arm_amp * np.sin(ph)  # arms swing against the legs
        ang[f"elbow_{opposite}"] += act * _D(10) * (1 + np.sin(ph))
    ang["yaw"] += hip_amp * 0.25 * np.sin(phase)
    ang["twist"] -= hip_amp * 0.45 * np.sin(phase)
    ang["roll"] += act * _D(3) * np.sin(phase)
    ang["lean"] += act * _D(4)


def _standing(rng: np.random.Generator, t, ang: dict) -> None:
    """Relaxed stance: soft knees, arms hanging, slow weight shifts and looking around."""
    shift = smooth_noise(rng, t, 0.3)
    ang["roll"] += _D(4) * shift
    ang["hip_abd_l"] += _D(3) * (1 + shift)
    ang["hip_abd_r"] += _D(3) * (1 - shift)
    for s in "lr":
        ang[f"knee_{s}"] += _D(5)
        ang[f"hip_flex_{s}"] += _D(3)
    ang["head_yaw"] += _D(25) * smooth_noise(rng, t, 0.25)


def _arm(ang: dict, side: str, weight, flex=0.0, abd=0.0, rot=0.0, elbow=0.0) -> None:
    """Blends one arm towards a target pose (degrees) with per-frame weight in [0, 1]."""
    for name, value in (("sh_flex", flex), ("sh_abd", abd), ("sh_rot", rot), ("elbow", elbow)):
        key = f"{name}_{side}"
        ang[key] = ang[key] * (1 - weight) + _D(value) * weight


def _sit(ang: dict, blend, hip: float, knee: float) -> None:
    """Blends both legs towards a sitting or crouching pose (degrees) with weight `blend`."""
    for s in "lr":
        ang[f"hip_flex_{s}"] = ang[f"hip_flex_{s}"] * (1 - blend) + _D(hip) * blend
        ang[f"knee_{s}"] = ang[f"knee_{s}"] * (1 - blend) + _D(knee) * blend
        ang[f"hip_abd_{s}"] += _D(8) * blend


@dataclasses.dataclass
class _Take:
    """What a recipe works with: randomness, time, the angle curves and the gesturing side."""

    rng: np.random.Generator
    t: np.ndarray  # (N,) seconds
    ang: dict
    side: str  # the arm that gestures ("l" | "r")
    other: str
    gate: np.ndarray  # (N,) smooth 0..1 on/off pattern for intermittent pacing

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def pulses(self, period: float, duty: float) -> np.ndarray:
        return smooth_pulses(self.rng, self.t, period, duty)


def _walking(c: _Take, action: str):
    """Walking, WalkTogether (head turned to the partner), WalkDog (leash arm, stop-and-go)."""
    base = {"Walking": c.u(1.1, 1.5), "WalkTogether": c.u(0.8, 1.1), "WalkDog": c.u(0.7, 1.2)}
    speed = base[action] * (1 + 0.12 * smooth_noise(c.rng, c.t, 0.3))
    if action == "WalkTogether":
        c.ang["head_yaw"] += _D(c.u(15, 35)) * (1 if c.side == "l" else -1)
    if action == "WalkDog":
        speed *= 0.55 + 0.45 * c.gate
        c.ang["lean"] += _D(c.u(5, 12))
        c.ang["head_pitch"] += _D(15)
        return speed, 1.3, lambda: _arm(c.ang, c.side, 1.0, c.u(25, 45), 10, 0, c.u(20, 45))
    return speed, 1.3, None


def _talking(c: _Take, action: str):
    """Directions (pointing), Discussion (two-arm gestures), Greeting (wave, bow), Phoning."""
    ang, t = c.ang, c.t
    if action == "Directions":
        pulse = c.pulses(c.u(1.8, 3.0), 0.5)
        ang["yaw"] += _D(40) * smooth_noise(c.rng, t, 0.15)
        return 0.35 * c.gate, 0.6, lambda: _arm(ang, c.side, pulse, c.u(65, 90), c.u(10, 30), 0, 10)
    if action == "Discussion":
        ang["twist"] += _D(10) * smooth_noise(c.rng, t, 0.5)

        def gesture():
            for s in "lr":
                osc = np.sin(2 * np.pi * c.u(0.5, 1.0) * t + c.u(0, 6.3))
                _arm(ang, s, 1.0, 25 + 15 * osc, 15, 20, 85 + 20 * osc)

        return 0.25 * c.gate, 0.5, gesture
    if action == "Greeting":
        pulse = c.pulses(c.u(2.5, 3.5), 0.55)
        ang["lean"] += _D(c.u(15, 30)) * c.pulses(3.0, 0.3)
        wave = 90 + 25 * np.sin(2 * np.pi * c.u(1.5, 2.5) * t)
        return 0.5 * c.gate, 0.8, lambda: _arm(ang, c.side, pulse, 35, c.u(55, 80), -60, wave)
    ang["head_pitch"] += _D(10)  # Phoning: hand at the ear, head tilted
    ang["side"] += _D(5) * (1 if c.side == "l" else -1)
    return 0.5 * c.gate, 0.7, lambda: _arm(ang, c.side, 1.0, c.u(60, 70), c.u(5, 20), 20, 150)


def _handling(c: _Take, action: str):
    """Photo (camera at the face, crouching), Posing (held poses), Purchases (bend and reach),
    Smoking (hand to mouth), Waiting (folded arms, occasional steps)."""
    ang, t = c.ang, c.t
    if action == "Photo":
        pulse = c.pulses(c.u(2.5, 4.0), 0.6)
        _sit(ang, 0.35 * c.pulses(4.0, 0.4), 70, 90)
        return 0.3 * c.gate, 0.6, lambda: [_arm(ang, s, pulse, 65, 5, 30, 120) for s in "lr"]
    if action == "Posing":

        def poses():
            for s in "lr":
                _arm(ang, s, 1.0, 0, 0, 0, 0)
                ang[f"sh_flex_{s}"] += _D(_keyframes(c.rng, t, 1.5, -10, 60))
                ang[f"sh_abd_{s}"] += _D(_keyframes(c.rng, t, 1.5, 10, 100))
                ang[f"elbow_{s}"] += _D(_keyframes(c.rng, t, 1.5, 0, 100))

        ang["side"] += _D(_keyframes(c.rng, t, 1.5, -10, 10))
        ang["lean"] += _D(_keyframes(c.rng, t, 1.5, -8, 15))
        return np.zeros_like(t), 0.4, poses
    if action == "Purchases":
        bend = c.pulses(c.u(2.5, 3.5), 0.5)
        ang["lean"] += _D(c.u(35, 55)) * bend
        _sit(ang, 0.3 * bend, 60, 70)
        return 0.5 * c.gate * (1 - bend), 0.9, lambda: _arm(ang, c.side, bend, 65, 10, 0, 25)
    if action == "Smoking":
        lift = c.pulses(c.u(3.0, 5.0), 0.35)
        return 0.4 * c.gate, 0.6, lambda: _arm(ang, c.side, lift, 65, 5, 50, 135)

    def folded():  # Waiting
        _arm(ang, c.side, 1.0, 20, 5, 40, 95)
        _arm(ang, c.other, c.pulses(5.0, 0.6), 20, 5, 40, 95)

    steps = np.clip(3 * smooth_noise(c.rng, t, 0.1), 0, 1)
    return 0.3 * c.gate * steps, 0.5, folded


def _seated(c: _Take, action: str):
    """Sitting (chair), Eating (chair, hands to mouth), SittingDown (down to a crouch and up)."""
    ang, t = c.ang, c.t
    if action == "SittingDown":
        down = c.pulses(c.u(3.0, 4.5), 0.7)
        _sit(ang, down, c.u(100, 115), c.u(120, 135))
        ang["lean"] += _D(30) * np.sin(np.pi * down) + _D(10) * down
        return np.zeros_like(t), 0.4, lambda: _arm(ang, c.side, down, 50, 15, 0, 40)
    _sit(ang, np.ones_like(t), c.u(80, 95), c.u(75, 95))
    ang["lean"] += _D(_keyframes(c.rng, t, 2.0, -10, 20))
    _arm(ang, "l", 1.0, 30, 10, 0, 70)
    _arm(ang, "r", 1.0, 30, 10, 0, 70)
    if action == "Sitting":
        return np.zeros_like(t), 0.3, lambda: _arm(ang, c.side, c.pulses(3, 0.4), 45, 20, 0, 60)
    lift_a, lift_b = c.pulses(3.0, 0.4), c.pulses(4.0, 0.3)

    def eat():
        _arm(ang, c.side, lift_a, 65, 5, 50, 135)
        _arm(ang, c.other, lift_b, 60, 5, 45, 125)

    return np.zeros_like(t), 0.3, eat


_RECIPES = {
    **dict.fromkeys(("Walking", "WalkTogether", "WalkDog"), _walking),
    **dict.fromkeys(("Directions", "Discussion", "Greeting", "Phoning"), _talking),
    **dict.fromkeys(("Photo", "Posing", "Purchases", "Smoking", "Waiting"), _handling),
    **dict.fromkeys(("Sitting", "Eating", "SittingDown"), _seated),
}


def _recipe(action: str, rng: np.random.Generator, t: np.ndarray, ang: dict):
    """Applies the gestures of `action`; returns its speed profile (N,), path radius and a
    callable that poses the arms after the gait (or None)."""
    if action not in _RECIPES:
        raise ValueError(f"unknown H36M action class {action!r}; expected one of {list(_RECIPES)}")
    side, other = ("l", "r") if rng.uniform() < 0.5 else ("r", "l")
    gate = (smooth_noise(rng, t, 0.2) > 0.1).astype(float)  # intermittent pacing
    gate = np.convolve(gate, np.ones(25) / 25, mode="same")  # (N,) smoothed over 0.5 s
    return _RECIPES[action](_Take(rng, t, ang, side, other, gate), action)


def synthesize_action(
    action: str, n_frames: int, bones: dict[str, float], rng: np.random.Generator, fps=50.0
) -> np.ndarray:
    """Synthesises one motion of an H36M action class.

    Args:
      action: one of the 15 classes (`skeleton.H36M_ACTIONS`).
      n_frames: number of frames.
      bones: per-subject segment lengths (`motion.sample_bone_lengths`).
      rng: random generator; it fully determines the motion.
      fps: frame rate (Human3.6M mocap is 50 fps).

    Returns:
      (n_frames, 32, 3) float32 world coordinates in metres, z up, feet on the floor.
    """
    t = np.arange(n_frames) / fps
    ang = {k: _D(2.0) * smooth_noise(rng, t, 0.8) for k in ANGLE_NAMES}
    ang["sh_abd_l"] += _D(8)
    ang["sh_abd_r"] += _D(8)
    ang["elbow_l"] += _D(12)
    ang["elbow_r"] += _D(12)
    _standing(rng, t, ang)
    speed, radius, arms = _recipe(action, rng, t, ang)
    speed = np.maximum(speed, 0.0)
    _gait(rng, t, speed, fps, bones["thigh"] + bones["shin"], ang)
    if arms is not None:
        arms()  # gestures override the arm swing where they are active
    xy, heading = _path(rng, speed, fps, radius)
    ang["yaw"] = ang["yaw"] + heading
    return forward_kinematics(ang, xy, bones).astype(np.float32)
