#!/usr/bin/env python3
# Writes heldout/arithmetic.txt: hand-written worksheets whose numbers are computed here, so
# every worked answer is right. Deterministic (fixed seed); run from any folder:
#   python3 models/distill/make_arithmetic.py
import math
from pathlib import Path
out=[]
def p(s=""): out.append(s)

p("Worksheet 1: Shopping and Money")
p()
items=[("notebooks",3,2.45),("pencils",12,0.35),("a ruler",1,1.80),("glue sticks",4,1.15)]
p("Maya buys school supplies for the new term.")
tot=0
for name,q,pr in items:
    c=round(q*pr,2); tot=round(tot+c,2)
    if q==1: p(f"She buys {name} for {pr:.2f} dollars.")
    else: p(f"She buys {q} {name} at {pr:.2f} dollars each, which costs {q} x {pr:.2f} = {c:.2f} dollars.")
p(f"Her total is {' + '.join(f'{round(q*pr,2):.2f}' for _,q,pr in items)} = {tot:.2f} dollars.")
p(f"She pays with a 20-dollar note, so her change is 20.00 - {tot:.2f} = {20-tot:.2f} dollars.")
p()
p("A shop sells a jacket for 84 dollars. During a sale the price is reduced by 25 percent.")
p(f"The discount is 25 percent of 84, which is 84 x 0.25 = {84*0.25:g} dollars.")
p(f"The sale price is 84 - {84*0.25:g} = {84-84*0.25:g} dollars.")
p(f"A week later the sale price is reduced by a further 10 percent: {84-84*0.25:g} x 0.9 = {round((84-84*0.25)*0.9,2):g} dollars.")
p(f"Two reductions of 25 and 10 percent are not the same as one reduction of 35 percent, which would give 84 x 0.65 = {round(84*0.65,2):g} dollars.")
p()
p("Leo earns 13.50 dollars an hour and works 6 hours on Saturday and 5 hours on Sunday.")
p(f"He works 6 + 5 = 11 hours, so he earns 11 x 13.50 = {11*13.5:.2f} dollars.")
p(f"He puts one third of it in his savings: {11*13.5:.2f} / 3 = {11*13.5/3:.2f} dollars.")
p()
p("Quick practice, with answers:")
import random
rng=random.Random(4242)
for i in range(1,21):
    a=rng.randint(12,999); b=rng.randint(12,999)
    op=rng.choice(["+","-","x"])
    if op=="+": r=a+b
    elif op=="-":
        a,b=max(a,b),min(a,b); r=a-b
    else:
        b=rng.randint(3,48); r=a*b
    p(f"{i}. {a} {op} {b} = {r}")
p()
p("Worksheet 2: Distance, Speed and Time")
p()
p("A cyclist rides at a steady 18 kilometres per hour. How long does a 45-kilometre ride take?")
p(f"Time is distance divided by speed: 45 / 18 = {45/18:g} hours, which is 2 hours and 30 minutes.")
p()
p("A ferry leaves at 09:40 and the crossing takes 2 hours and 35 minutes. When does it arrive?")
p("Adding 2 hours gives 11:40, and adding 35 more minutes gives 12:15.")
p()
p("Two towns are 210 kilometres apart. A bus leaves the first town at 60 kilometres per hour, and at the same moment a van leaves the second town at 80 kilometres per hour, driving toward the bus.")
p(f"Together they close the gap at 60 + 80 = 140 kilometres per hour, so they meet after 210 / 140 = {210/140:g} hours, or 1 hour and 30 minutes.")
p(f"By then the bus has covered 60 x 1.5 = {60*1.5:g} kilometres and the van 80 x 1.5 = {80*1.5:g} kilometres, and 90 + 120 = 210.")
p()
p("A runner completes 5 laps of a 400-metre track in 9 minutes and 20 seconds.")
p(f"The distance is 5 x 400 = 2000 metres, and the time is 9 x 60 + 20 = 560 seconds.")
p(f"The average speed is 2000 / 560 = {2000/560:.2f} metres per second.")
p(f"One lap takes 560 / 5 = {560/5:g} seconds on average, which is 1 minute and 52 seconds.")
p()
p("Convert the following times:")
for h,m in [(1,45),(3,10),(0,95),(2,5),(4,50)]:
    tot=h*60+m
    p(f"{h} h {m} min = {tot} minutes = {tot*60} seconds")
p()
p("Worksheet 3: Fractions and Decimals")
p()
from fractions import Fraction as F
pairs=[(F(1,2),F(1,3)),(F(3,4),F(1,6)),(F(2,5),F(3,10)),(F(5,8),F(1,4)),(F(7,9),F(2,3))]
for a,b in pairs:
    p(f"{a} + {b} = {a+b}, and {a} - {b} = {a-b}")
p()
p("To multiply fractions, multiply the numerators and the denominators:")
for a,b in [(F(2,3),F(3,5)),(F(4,7),F(7,8)),(F(5,6),F(9,10))]:
    p(f"{a} x {b} = {a.numerator*b.numerator}/{a.denominator*b.denominator} = {a*b}")
p()
p("To divide by a fraction, multiply by its reciprocal:")
for a,b in [(F(3,4),F(1,2)),(F(5,9),F(5,3)),(F(7,10),F(14,5))]:
    p(f"{a} / {b} = {a} x {1/b} = {a/b}")
p()
p("Writing fractions as decimals:")
for f in [F(1,8),F(3,5),F(7,20),F(5,16),F(9,25)]:
    p(f"{f} = {f.numerator/f.denominator:g}")
p()
p("A recipe for 4 people needs 3/4 of a cup of milk. How much milk is needed for 10 people?")
p(f"For one person it needs 3/4 / 4 = 3/16 of a cup, so for 10 people it needs 10 x 3/16 = {F(30,16)} cups, which is {30/16:g} cups.")
p()
p("Worksheet 4: Areas, Perimeters and Volumes")
p()
p("A garden is 14.5 metres long and 9 metres wide.")
p(f"Its area is 14.5 x 9 = {14.5*9:g} square metres, and its perimeter is 2 x (14.5 + 9) = {2*(14.5+9):g} metres.")
p(f"Grass seed covers 25 square metres per box, so the garden needs {14.5*9:g} / 25 = {14.5*9/25:.2f} boxes, which means buying {math.ceil(14.5*9/25)} boxes.")
p()
p("A circular pond has a radius of 3 metres. Using 3.14 for pi:")
p(f"its circumference is 2 x 3.14 x 3 = {2*3.14*3:.2f} metres, and its area is 3.14 x 3 x 3 = {3.14*9:.2f} square metres.")
p()
p("A fish tank is 80 centimetres long, 35 centimetres wide and 40 centimetres high.")
p(f"Its volume is 80 x 35 x 40 = {80*35*40} cubic centimetres. Since 1 litre is 1000 cubic centimetres, the tank holds {80*35*40/1000:g} litres.")
p(f"If it is filled to 90 percent, it contains {80*35*40/1000*0.9:g} litres of water.")
p()
p("A triangle has a base of 12 centimetres and a height of 7 centimetres.")
p(f"Its area is half of base times height: 12 x 7 / 2 = {12*7//2} square centimetres.")
p()
p("A right triangle has legs of 9 and 12 centimetres.")
p(f"By Pythagoras, the hypotenuse is the square root of 9 x 9 + 12 x 12 = 81 + 144 = 225, so it is {int(math.sqrt(225))} centimetres.")
p()
p("Worksheet 5: Percentages and Ratios")
p()
p("A town had 12400 residents ten years ago and has 14260 today.")
p(f"The increase is 14260 - 12400 = {14260-12400} people, and {14260-12400} / 12400 = {(14260-12400)/12400:.2f}, so the population grew by {100*(14260-12400)/12400:g} percent.")
p()
p("In a class of 30 students, the ratio of students who walk to school to those who take the bus is 2 : 3.")
p("There are 2 + 3 = 5 parts, so each part is 30 / 5 = 6 students.")
p("That means 2 x 6 = 12 students walk and 3 x 6 = 18 take the bus.")
p()
p("A bank pays 3 percent interest per year, added at the end of each year. Starting with 2000 dollars:")
bal=2000.0
for y in range(1,5):
    new=round(bal*1.03,2)
    p(f"after year {y}: {bal:.2f} x 1.03 = {new:.2f} dollars")
    bal=new
p()
p("Paint is mixed from blue and white in the ratio 1 : 4. To make 7.5 litres of paint:")
p(f"there are 5 parts, each part is 7.5 / 5 = {7.5/5:g} litres, so the mix needs {7.5/5:g} litres of blue and {4*7.5/5:g} litres of white.")
p()
p("Percentages of amounts:")
for pc,amt in [(12,250),(35,80),(7.5,640),(120,45),(0.5,3000)]:
    p(f"{pc:g} percent of {amt} is {amt*pc/100:g}")
p()
p("Worksheet 6: Order of Operations and Number Facts")
p()
exprs=["8 + 6 x 3","(8 + 6) x 3","48 / 6 - 2","48 / (6 - 2)","5 x 5 - 4 x 4","2 x (9 + 11) / 4","100 - 7 x 8 + 3","(15 - 3) x (2 + 5)","36 / 4 / 3","3 + 4 x 2 - 6 / 3"]
for e in exprs:
    v=eval(e.replace("x","*"))
    p(f"{e} = {v:g}")
p()
p("Multiples and divisors:")
def divs(n): return [d for d in range(1,n+1) if n%d==0]
for n in [24,36,45,60,97]:
    d=divs(n)
    p(f"The divisors of {n} are {', '.join(map(str,d))}." + (" It is a prime number." if len(d)==2 else ""))
for a,b in [(12,18),(20,45),(14,35),(27,36)]:
    g=math.gcd(a,b); l=a*b//g
    p(f"The greatest common divisor of {a} and {b} is {g}, and their least common multiple is {l}.")
p()
p("Square numbers and square roots:")
p(", ".join(f"{i} x {i} = {i*i}" for i in range(11,21)))
p()
p("Powers of two: " + ", ".join(f"2^{i} = {2**i}" for i in range(1,13)))
p()
p("Worksheet 7: Mixed Word Problems")
p()
p("A farmer collects 17 eggs a day from her hens. How many eggs does she collect in April, which has 30 days?")
p(f"17 x 30 = {17*30} eggs. If she packs them in boxes of 6, she fills {17*30//6} boxes and has {17*30%6} eggs left over.")
p()
p("A theatre has 24 rows with 32 seats in each row. For one show, 611 tickets were sold.")
p(f"There are 24 x 32 = {24*32} seats, so {24*32-611} seats were empty, and the theatre was {100*611/(24*32):.1f} percent full.")
p()
p("Three friends share the cost of a holiday cottage, which is 945 dollars for the week. One friend stays only 4 of the 7 nights and pays for those nights alone.")
p(f"The cottage costs 945 / 7 = {945/7:g} dollars per night. Each night is shared by those present.")
p(f"For 4 nights all three are there: each pays 4 x 135 / 3 = {4*135/3:g} dollars. For the other 3 nights two friends share: each of them pays 3 x 135 / 2 = {3*135/2:g} dollars.")
p(f"So the friend who stays 4 nights pays {4*135/3:g} dollars, and the other two pay {4*135/3:g} + {3*135/2:g} = {4*135/3+3*135/2:g} dollars each. Check: {4*135/3:g} + 2 x {4*135/3+3*135/2:g} = {4*135/3 + 2*(4*135/3+3*135/2):g}.")
p()
p("A water tank holds 1200 litres. A pipe fills it at 40 litres per minute while a leak loses 15 litres per minute.")
p(f"The tank gains 40 - 15 = 25 litres per minute, so filling it from empty takes 1200 / 25 = {1200//25} minutes.")
p()
p("A phone plan costs 12 dollars a month plus 0.08 dollars per megabyte over 500 megabytes. In March, Sam used 740 megabytes.")
p(f"He went over by 740 - 500 = 240 megabytes, which costs 240 x 0.08 = {240*0.08:.2f} dollars, so his bill is 12 + {240*0.08:.2f} = {12+240*0.08:.2f} dollars.")
p()
p("The temperature at midnight was -6 degrees. By noon it had risen by 14 degrees, and by the next midnight it had fallen by 11 degrees.")
p(f"At noon it was -6 + 14 = {-6+14} degrees, and at the next midnight it was {-6+14} - 11 = {-6+14-11} degrees.")
p()
p("Long division, step by step: 7452 divided by 6.")
p("6 goes into 7 once, remainder 1. Bring down 4 to make 14; 6 goes into 14 twice, remainder 2.")
p("Bring down 5 to make 25; 6 goes into 25 four times, remainder 1. Bring down 2 to make 12; 6 goes into 12 twice, remainder 0.")
p(f"So 7452 / 6 = {7452//6}, with no remainder.")
p()
p("Long multiplication, step by step: 348 x 27.")
p(f"348 x 7 = {348*7}, and 348 x 20 = {348*20}. Adding them: {348*7} + {348*20} = {348*27}.")
p()
p("More practice, with answers:")
for i in range(1,16):
    a=rng.randint(100,9999); b=rng.randint(2,19)
    q,r=divmod(a,b)
    p(f"{i}. {a} divided by {b} is {q} remainder {r}, because {b} x {q} + {r} = {a}.")
(Path(__file__).resolve().parent / 'heldout' / 'arithmetic.txt').write_text("\n".join(out) + "\n")
