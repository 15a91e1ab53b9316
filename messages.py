"""Log lines in the seed's style: Korean by default, English with LOG_LANGUAGE=en."""
from __future__ import annotations

import os

KO: dict[str, str] = {
    "first_entry": "첫 진입: {direction}",
    "pos_sync": "포지션 동기화: 평단가 ${old_avg:.2f} → ${avg:.2f}, 수량 {old_qty:.6f} → {qty:.6f}",
    "level_fill": "Level {level} 체결: ${price:.2f}, 평단가: ${avg:.2f}, 총 수량: {qty:.6f}",
    "tp_prepare": "TP 주문 준비: 바이낸스 포지션 {qty:.6f}, 평단가 ${avg:.2f}",
    "tp_set": "TP 주문 설정: ${price:.2f}, 수량: {qty:.6f}",
    "be_prepare": "BE 주문 준비: 바이낸스 포지션 {qty:.6f}, Level1 {q1:.6f}, 덜어내기 {be_qty:.6f}",
    "be_set": "BE 주문 설정: ${price:.2f}, 덜어내기 수량: {qty:.6f} (Level1 {q1:.6f} 유지)",
    "sl_set": "SL 주문 설정: ${price:.2f} (전량, Algo Order)",
    "sl_market": "SL 트리거 가격을 이미 지남: 시장가 전량 청산",
    "tp_fill": "TP 체결: ${price:.2f}, 실현 PnL: ${pnl:.2f}",
    "be_fill": "BE 체결: ${price:.2f}, 예상 PnL: ${pnl:.2f}",
    "sl_fill": "SL 체결: ${price:.2f}, 실현 PnL: ${pnl:.2f}",
    "be_cancelled": "BE 후 기존 주문 전부 취소 완료",
    "level1_update": "Level 1 물량 업데이트: {qty:.6f}",
    "open_orders": "바이낸스 대기 주문 수: {n}개",
    "be_state": "BE 후 포지션 상태: Level 1, 평단가 ${avg:.2f}, 수량 {qty:.6f}",
    "be_regrid": "BE 후 그리드 재설정: new_center=${center:.2f}",
    "level_reset": "Level {level} 주문 재설정: ${price:.2f}",
    "level_set": "Level {level} 주문 설정: ${price:.2f}, 수량: {qty:.6f}",
    "grid_center": "그리드 설정: grid_center=${center:.2f} ({reason})",
    "range_exit": "그리드 범위 이탈: 가격 ${price:.2f}, 기준 ${old:.2f} → ${center:.2f}",
    "level_skip": "Level {level} 건너뜀: 수량 {qty:.6f} × ${price:.2f} 이(가) 최소 주문 기준 미달",
    "full_close": "그리드 재설정 ({reason}): new_center=${center:.2f}",
}

EN: dict[str, str] = {
    "first_entry": "First entry: {direction}",
    "pos_sync": "Position sync: average ${old_avg:.2f} → ${avg:.2f}, quantity {old_qty:.6f} → {qty:.6f}",
    "level_fill": "Level {level} filled: ${price:.2f}, average: ${avg:.2f}, total quantity: {qty:.6f}",
    "tp_prepare": "TP order prepare: exchange position {qty:.6f}, average ${avg:.2f}",
    "tp_set": "TP order set: ${price:.2f}, quantity: {qty:.6f}",
    "be_prepare": "BE order prepare: exchange position {qty:.6f}, Level1 {q1:.6f}, to take off {be_qty:.6f}",
    "be_set": "BE order set: ${price:.2f}, take-off quantity: {qty:.6f} (keeping Level1 {q1:.6f})",
    "sl_set": "SL order set: ${price:.2f} (whole position, Algo Order)",
    "sl_market": "SL trigger already crossed: closing the whole position at market",
    "tp_fill": "TP filled: ${price:.2f}, realized PnL: ${pnl:.2f}",
    "be_fill": "BE filled: ${price:.2f}, expected PnL: ${pnl:.2f}",
    "sl_fill": "SL filled: ${price:.2f}, realized PnL: ${pnl:.2f}",
    "be_cancelled": "All previous orders cancelled after BE",
    "level1_update": "Level 1 quantity updated: {qty:.6f}",
    "open_orders": "Open orders on the exchange: {n}",
    "be_state": "Position after BE: Level 1, average ${avg:.2f}, quantity {qty:.6f}",
    "be_regrid": "Grid reset after BE: new_center=${center:.2f}",
    "level_reset": "Level {level} order reset: ${price:.2f}",
    "level_set": "Level {level} order set: ${price:.2f}, quantity: {qty:.6f}",
    "grid_center": "Grid set: grid_center=${center:.2f} ({reason})",
    "range_exit": "Price left the grid range: ${price:.2f}, centre ${old:.2f} → ${center:.2f}",
    "level_skip": "Level {level} skipped: quantity {qty:.6f} × ${price:.2f} is below the minimum order size",
    "full_close": "Grid reset ({reason}): new_center=${center:.2f}",
}


def catalog(lang: str | None = None) -> dict[str, str]:
    lang = (lang or os.environ.get("LOG_LANGUAGE") or "ko").lower()
    return EN if lang.startswith("en") else KO


def korean() -> bool:
    """The daemon's own log lines (outside the catalog) follow the same LOG_LANGUAGE choice."""
    return catalog() is KO
